/**
 * The parts of the AWS SDK the s3 sink uses, loaded only when a pipeline builds an s3 sink.
 * Importing @aws-sdk/client-s3 costs a few hundred milliseconds of start-up, which every command
 * (`--version`, `validate`, a pipeline without S3) would otherwise pay.
 */
export { HeadBucketCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
export { Upload } from '@aws-sdk/lib-storage';
export { NodeHttpHandler } from '@smithy/node-http-handler';

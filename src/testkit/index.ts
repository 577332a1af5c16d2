/**
 * Test kit for sink authors (`logferry/testkit`): a recording destination, a fault-injecting proxy
 * and the conformance cases every sink must pass. Framework-agnostic: failures are thrown Errors.
 */
export { decodeBody, documentIds, parseDocuments, startReceiver } from './receiver.js';
export type { ReceivedRequest, Receiver, ReceiverAnswer, ReceiverOptions } from './receiver.js';
export { faultPlans, startFaultProxy } from './fault-proxy.js';
export type { Fault, FaultKind, FaultPlan, FaultProxy, FaultProxyOptions, FaultRequest, MixedFaultOptions, ProxyExchange, RecordIds } from './fault-proxy.js';
export { driveSink, jobRecord, sinkConformanceCases } from './conformance.js';
export type { ConformanceCase, DriveOptions, DriveResult, RejectedRecord, SinkUnderTest } from './conformance.js';

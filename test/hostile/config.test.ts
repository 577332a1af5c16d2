/**
 * Issue 9, finding 10: configuration that `validate` accepted and `run` mishandled. Every case runs
 * the built CLI, both `validate` and `run`, and expects a config error (exit 78) with the option's
 * position, never a core dump, a stack trace, a timer firing every millisecond or a retry loop.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, makeJob, readTree, removeAll, runCli, scratch, standardPipeline, writePipeline } from '../helpers/cli.js';

const cleanup: string[] = [];
afterEach(() => removeAll(cleanup));

const STACK_FRAME = /^\s{4}at /m;
/** Each test spawns the CLI several times (about a second each, much more on a loaded machine). */
const SPAWNING = { timeout: 240_000 };

/**
 * `validate` and `run --once` both refuse the file with exit 78 and a message naming `where`.
 * Variants of one case check `run` once (`alsoRun: false` for the rest): each spawn costs a second.
 */
async function expectConfigError(dir: string, file: string, where: RegExp, env: NodeJS.ProcessEnv = {}, alsoRun = true): Promise<string> {
  const validate = await runCli(['validate', '-c', file], { cwd: dir, env, timeoutMs: 60_000 });
  expect(validate.code, validate.stderr).toBe(78);
  expect(validate.stderr).toMatch(where);
  expect(validate.stderr).not.toMatch(STACK_FRAME);
  if (!alsoRun) return validate.stderr;
  const run = await runCli(['run', '--once', '-c', file], { cwd: dir, env, timeoutMs: 60_000 });
  expect(run.code, run.stderr).toBe(78);
  expect(run.stderr).toMatch(where);
  expect(run.stderr).not.toMatch(STACK_FRAME);
  return validate.stderr;
}

async function setup(): Promise<{ dir: string; logs: string; out: string; data: string }> {
  const dir = await scratch(cleanup);
  const logs = join(dir, 'logs');
  await mkdir(logs);
  await writeFile(join(logs, 'jobs.ndjson'), [1, 2, 3].map((id) => JSON.stringify(makeJob(id))).join('\n') + '\n');
  return { dir, logs, out: join(dir, 'out'), data: join(dir, 'data') };
}

describe('numeric options have bounds', () => {
  it('refuses read_buffer_bytes of 4 GiB (it aborted Node with a core dump) and intervals past 2^31-1 ms', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    const base = standardPipeline({ dataDir: data, include: join(logs, '*.ndjson'), out });
    const huge = await writePipeline(dir, base.replace('    rotate_wait_ms: 300\n', '    rotate_wait_ms: 300\n    read_buffer_bytes: 4294967296\n'));
    await expectConfigError(dir, huge, /pipeline\.yaml:\d+:\d+: sources\.jobs\.read_buffer_bytes: .*67108864/);

    const timers = await writePipeline(
      dir,
      base
        .replace('status_interval_ms: 60000', 'status_interval_ms: 4294967296')
        .replace('checkpoint_interval_ms: 100', 'checkpoint_interval_ms: 3000000000')
        .replace('shutdown_timeout: 20s', 'shutdown_timeout: 9999999999s'),
    );
    const message = await expectConfigError(dir, timers, /status_interval_ms/);
    expect(message).toMatch(/:\d+:\d+: checkpoint_interval_ms: /);
    expect(message).toMatch(/:\d+:\d+: shutdown_timeout: must be at most 60m/);

    const threads = await writePipeline(dir, `pool: { threads: 256 }\n${base}`);
    await expectConfigError(dir, threads, /pipeline\.yaml:1:\d+: pool\.threads: .*64/);
  });

  it('refuses .inf, -.inf, .nan and 1e400 with a message that says why', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    const base = standardPipeline({ dataDir: data, include: join(logs, '*.ndjson'), out });
    for (const [index, value] of ['.inf', '-.inf', '.nan', '1e400'].entries()) {
      const file = await writePipeline(dir, base.replace('poll_interval_ms: 20', `poll_interval_ms: ${value}`));
      await expectConfigError(dir, file, /sources\.jobs\.poll_interval_ms: .*\.inf, \.nan and numbers too large for a double are not accepted/, {}, index === 0);
    }
  });
});

describe('YAML that attacks the parser', () => {
  it('turns an alias bomb into a config error at the alias (exit 78, not a stack trace and exit 1)', SPAWNING, async () => {
    const { dir } = await setup();
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (const [name, prev] of [['b', 'a'], ['c', 'b'], ['d', 'c'], ['e', 'd'], ['f', 'e'], ['g', 'f'], ['h', 'g'], ['i', 'h']]) {
      lines.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    const file = await writePipeline(dir, lines.join('\n') + '\nsources: {}\nsinks: {}\n');
    await expectConfigError(dir, file, /pipeline\.yaml:2:\d+: aliases expand to too many nodes/);
  });

  it('turns deep nesting, a huge file, bad UTF-8 and an alias into itself into config errors', SPAWNING, async () => {
    const { dir } = await setup();
    const deep = await writePipeline(dir, `sources: ${'['.repeat(50_000)}${']'.repeat(50_000)}\nsinks: {}\n`);
    await expectConfigError(dir, deep, /pipeline\.yaml:1:\d+: /);
    const nested = await writePipeline(dir, `sources:\n${Array.from({ length: 40 }, (_, i) => `${'  '.repeat(i + 1)}k${i}:`).join('\n')} 1\nsinks: {}\n`);
    await expectConfigError(dir, nested, /nested more than 32 levels deep/, {}, false);
    const huge = await writePipeline(dir, `# ${'x'.repeat(2 * 1024 * 1024)}\nsources: {}\n`);
    await expectConfigError(dir, huge, /larger than 1048576 bytes/, {}, false);
    const badUtf8 = join(dir, 'bad-utf8.yaml');
    await writeFile(badUtf8, Buffer.concat([Buffer.from('sources: {}\nsinks:\n  a: "'), Buffer.from([0xff, 0xfe]), Buffer.from('"\n')]));
    await expectConfigError(dir, badUtf8, /bad-utf8\.yaml:3:\d+: the pipeline file is not valid UTF-8/, {}, false);
    const selfAlias = await writePipeline(dir, 'sources: &s\n  jobs: *s\nsinks: {}\n');
    await expectConfigError(dir, selfAlias, /pipeline\.yaml:\d+:\d+: /, {}, false);
  });
});

describe('include names files', () => {
  it('refuses a folder in include (it read .aws/credentials into the dead letters) and suggests dir/*.ndjson', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    await mkdir(join(logs, '.aws'));
    await writeFile(join(logs, '.aws', 'credentials'), '[default]\naws_secret_access_key = hidden-secret-value\n');
    const folder = await writePipeline(dir, standardPipeline({ dataDir: data, include: logs, out }));
    await expectConfigError(dir, folder, /sources\.jobs\.include\[0\]: ".*logs" is a folder; include names files, e\.g\. ".*logs\/\*\.ndjson"/);
    expect(await readdir(dir)).not.toContain('data');
  });

  it('never matches hidden files or folders with a wildcard, only when the pattern names them', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    await mkdir(join(logs, '.aws'));
    await writeFile(join(logs, '.aws', 'credentials'), '[default]\naws_secret_access_key = hidden-secret-value\n');
    await writeFile(join(logs, '.hidden.ndjson'), JSON.stringify(makeJob(4)) + '\n');
    await mkdir(join(logs, '.archive'));
    await writeFile(join(logs, '.archive', 'old.ndjson'), JSON.stringify(makeJob(5)) + '\n');
    const file = await writePipeline(
      dir,
      standardPipeline({ dataDir: data, include: join(logs, '**'), out }).replace(
        `include: [${JSON.stringify(join(logs, '**'))}]`,
        `include: [${JSON.stringify(join(logs, '**'))}, ${JSON.stringify(join(logs, '.archive', '*.ndjson'))}]`,
      ),
    );
    const run = await runCli(['run', '--once', '-c', file], { cwd: dir, timeoutMs: 60_000 });
    expect(run.code, run.stderr).toBe(0);
    const shipped = [...(await readTree(out)).keys()].map((key) => /-(\d+)-\d{14}-succeeded\.json$/.exec(key)?.[1]).sort();
    // Jobs 1-3 (logs/jobs.ndjson) and 5 (.archive, named by the second pattern); not .hidden.ndjson.
    expect(shipped).toEqual(['1', '2', '3', '5']);
    const deadLetters = await readTree(join(data, 'dead_letter'));
    for (const content of deadLetters.values()) expect(content.toString()).not.toContain('hidden-secret-value');
  });

  it('warns, in validate and at the start of run, about a glob that matches nothing', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    const file = await writePipeline(
      dir,
      standardPipeline({ dataDir: data, include: join(logs, '*.ndjson'), out }).replace(
        `include: [${JSON.stringify(join(logs, '*.ndjson'))}]`,
        `include: [${JSON.stringify(join(logs, '*.ndjson'))}, "./nowhere/*.ndjson"]`,
      ),
    );
    const validate = await runCli(['validate', '-c', file], { cwd: dir });
    expect(validate.code, validate.stderr).toBe(0);
    expect(validate.stderr).toMatch(/pipeline\.yaml:\d+:\d+: sources\.jobs\.include\[1\]: "\.\/nowhere\/\*\.ndjson" matches no file yet/);
    const run = await runCli(['run', '--once', '-c', file], { cwd: dir });
    expect(run.code, run.stderr).toBe(0);
    const firstLines = run.stderr.split('\n').slice(0, 2).join('\n');
    expect(firstLines).toContain('include[1]: "./nowhere/*.ndjson" matches no file yet');
  });
});

describe('http sink options that every request would fail on', () => {
  const httpSink = (extra: string): string => `  web:
    type: http
    inputs: [keyed]
    uri: http://127.0.0.1:9/ingest
${extra}`;

  it('refuses header names that are not tokens and values with CR, LF or NUL, at their position', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    const base = { dataDir: data, include: join(logs, '*.ndjson'), out };
    for (const [index, [headers, where]] of ([
      ['{ "X-Ok": "a\\r\\nInjected: 1" }', /sinks\.web\.headers\.X-Ok: must not contain line breaks/],
      ['{ "X-Nul": "a\\0b" }', /sinks\.web\.headers\.X-Nul: must not contain line breaks, NUL/],
      ['{ "Bad Name": "x" }', /sinks\.web\.headers\.Bad Name: is not a valid header name/],
      ['{ "X-A:b": "x" }', /sinks\.web\.headers\.X-A:b: is not a valid header name/],
      ['{ "Transfer-Encoding": "chunked" }', /sinks\.web\.headers\.Transfer-Encoding: is set by the HTTP client/],
    ] as const).entries()) {
      const file = await writePipeline(dir, standardPipeline({ ...base, sinks: httpSink(`    headers: ${headers}\n`) }));
      await expectConfigError(dir, file, new RegExp(`pipeline\\.yaml:\\d+:\\d+: ${where.source}`), {}, index === 0);
    }
    const token = await writePipeline(dir, standardPipeline({ ...base, sinks: httpSink('    auth: { strategy: bearer, token: "abc\\ndef" }\n') }));
    await expectConfigError(dir, token, /sinks\.web\.auth\.token: must not contain line breaks/, {}, false);
  });

  it('checks the TLS files in validate: missing, not PEM, a key that is not the certificate’s', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    const pki = join(dir, 'pki');
    await mkdir(pki);
    for (const name of ['a', 'b']) {
      const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', join(pki, `${name}.key`), '-out', join(pki, `${name}.crt`)]);
      expect(made.status, String(made.stderr)).toBe(0);
    }
    await writeFile(join(pki, 'garbage.pem'), '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
    const base = { dataDir: data, include: join(logs, '*.ndjson'), out };
    const tls = (options: string): string => standardPipeline({ ...base, sinks: httpSink(`    tls: { ${options} }\n`) });

    await expectConfigError(dir, await writePipeline(dir, tls('ca_file: ./pki/missing.pem')), /pipeline\.yaml:\d+:\d+: sinks\.web\.tls\.ca_file: cannot read \.\/pki\/missing\.pem: no such file/);
    await expectConfigError(dir, await writePipeline(dir, tls('ca_file: ./pki/garbage.pem')), /sinks\.web\.tls\.ca_file: certificate 1 of \.\/pki\/garbage\.pem does not parse/);
    const variants: [string, RegExp][] = [
      ['ca_file: ./pki/a.key', /sinks\.web\.tls\.ca_file: \.\/pki\/a\.key holds no PEM certificate/],
      ['cert_file: ./pki/a.crt, key_file: ./pki/a.crt', /sinks\.web\.tls\.key_file: .* is not an unencrypted PEM private key/],
      ['cert_file: ./pki/a.crt, key_file: ./pki/b.key', /sinks\.web\.tls\.key_file: \.\/pki\/b\.key is not the private key of the certificate/],
      ['cert_file: ./pki/a.crt', /sinks\.web\.tls\.cert_file: a client certificate needs its private key/],
    ];
    for (const [options, where] of variants) await expectConfigError(dir, await writePipeline(dir, tls(options)), where, {}, false);

    const good = await runCli(['validate', '-c', await writePipeline(dir, tls('ca_file: ./pki/b.crt, cert_file: ./pki/a.crt, key_file: ./pki/a.key'))], { cwd: dir });
    expect(good.code, good.stderr).toBe(0);
  });
});

describe('checks that need the environment', () => {
  it('reports a missing or short HMAC key in validate, not only when run builds the pipeline', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    const file = await writePipeline(
      dir,
      standardPipeline({ dataDir: data, include: join(logs, '*.ndjson'), out }).replace('    type: redact\n', '    type: redact\n    replacement: hash\n    hash_key_env: FERRY_TEST_KEY\n'),
    );
    await expectConfigError(dir, file, /pipeline\.yaml:\d+:\d+: transforms\.redacted\.hash_key_env: .*FERRY_TEST_KEY is not set/, { FERRY_TEST_KEY: undefined });
    await expectConfigError(dir, file, /FERRY_TEST_KEY is only 5 characters long/, { FERRY_TEST_KEY: 'short' }, false);
    const ok = await runCli(['validate', '-c', file], { cwd: dir, env: { FERRY_TEST_KEY: 'a-long-enough-secret-key' } });
    expect(ok.code, ok.stderr).toBe(0);
  });
});

describe('keys name their record', () => {
  it('refuses a job_key without the job id and an activity_key without the digest', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    const file = await writePipeline(
      dir,
      standardPipeline({ dataDir: data, include: join(logs, '*.ndjson'), out }).replace(
        '    type: path_format\n',
        '    type: path_format\n    job_key: same.json\n    activity_key: "{team_id}/{event}.json"\n',
      ),
    );
    const message = await expectConfigError(dir, file, /pipeline\.yaml:\d+:\d+: transforms\.keyed\.job_key: the key must contain \{job_id\} or \{formatted_job_id\}/);
    expect(message).toMatch(/pipeline\.yaml:\d+:\d+: transforms\.keyed\.activity_key: the key must contain \{digest\}/);
  });
});

describe('a closed pipe', () => {
  it('ends `dead-letter list | head -1` quietly with exit 0, without an EPIPE stack trace', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    // Enough dead letters that --json writes far more than a pipe holds.
    await writeFile(join(logs, 'bad.ndjson'), '{"not":"a record"}\n'.repeat(4000));
    const file = await writePipeline(dir, standardPipeline({ dataDir: data, include: join(logs, '*.ndjson'), out }));
    const run = await runCli(['run', '--once', '-c', file], { cwd: dir, timeoutMs: 120_000 });
    expect(run.code, run.stderr).toBe(65);

    const child = spawn(process.execPath, [CLI, 'dead-letter', 'list', '--json', '-c', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const hung = setTimeout(() => child.kill('SIGKILL'), 30_000);
    // Read the first chunk, then close the pipe, as `head -1` does.
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.stdout.destroy();
    const code = await closed;
    clearTimeout(hung);
    expect(code, stderr).toBe(0);
    expect(stderr).not.toContain('EPIPE');
    expect(stderr).not.toMatch(STACK_FRAME);
  });

  it('ends `run` whose console output pipe closed with exit 74, not 0: it did not finish', SPAWNING, async () => {
    const { dir, logs, data } = await setup();
    await writeFile(join(logs, 'jobs.ndjson'), Array.from({ length: 3000 }, (_, i) => JSON.stringify(makeJob(9_100_000 + i)) + '\n').join(''));
    const file = await writePipeline(
      dir,
      standardPipeline({ dataDir: data, include: join(logs, '*.ndjson'), out: '', sinks: '  shown:\n    type: console\n    inputs: [keyed]\n' }),
    );
    const child = spawn(process.execPath, [CLI, 'run', '--once', '-c', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const hung = setTimeout(() => child.kill('SIGKILL'), 60_000);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.stdout.destroy();
    const code = await closed;
    clearTimeout(hung);
    expect(code, stderr).toBe(74);
    expect(stderr).not.toMatch(STACK_FRAME);
  });
});

describe('read-only commands', () => {
  it('list dead letters without the secrets and files that run needs (no preflight)', SPAWNING, async () => {
    const { dir, logs, out, data } = await setup();
    await writeFile(join(logs, 'bad.ndjson'), '{"not":"a record"}\n');
    const file = await writePipeline(
      dir,
      standardPipeline({ dataDir: data, include: join(logs, '*.ndjson'), out }).replace('    type: redact\n', '    type: redact\n    replacement: hash\n'),
    );
    const key = { LOGFERRY_HASH_KEY: 'a-secret-of-at-least-16-characters' };
    const run = await runCli(['run', '--once', '-c', file], { cwd: dir, env: key, timeoutMs: 120_000 });
    expect(run.code, run.stderr).toBe(65);
    const validate = await runCli(['validate', '-c', file], { cwd: dir, env: { LOGFERRY_HASH_KEY: '' } });
    expect(validate.code, validate.stderr).toBe(78);
    const list = await runCli(['dead-letter', 'list', '-c', file], { cwd: dir, env: { LOGFERRY_HASH_KEY: '' } });
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toContain('LF_RECORD_INVALID');
  });
});

import { createServer } from 'node:http';

/**
 * The HTTP receiver of the benchmark, run as its own process so that its CPU is not charged to
 * logferry. It reads every body to its end (as a real collector must) and answers 200.
 * Prints `PORT <n>` on stdout once listening; exits when its stdin closes.
 */
const server = createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    res.writeHead(200, { 'content-length': '0' });
    res.end();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  if (address && typeof address === 'object') process.stdout.write(`PORT ${address.port}\n`);
});
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));

// Smoke test for a locally built mediasoup-worker binary.
//
// Usage: node_modules/.bin/node scripts/mediasoup-worker/smoke.mjs <workerBin>
//
// Pipeline (everything on 127.0.0.1, one router):
//
//   dgram socket --plain RTP--> PlainTransport A (no SRTP, comedia) [opus producer]
//        --> consumer on PlainTransport B (SRTP) --SRTP--> PlainTransport C (SRTP)
//        [producer built from the consumer's rtpParameters]
//
// C's producer only counts packets that B srtp_protect()ed and C
// srtp_unprotect()ed successfully, so packetCount > 0 proves the libsrtp3-API
// adapter over Debian's libsrtp2 works in both directions.
import { createRequire } from 'node:module';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const workerBin = process.argv[2];
if (!workerBin) {
	console.error('usage: smoke.mjs <path/to/mediasoup-worker>');
	process.exit(2);
}
if (!fs.existsSync(workerBin)) {
	console.error(`FAIL: worker binary not found: ${workerBin}`);
	process.exit(1);
}

// Resolve mediasoup from the repo's node_modules regardless of the cwd.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(path.join(repoRoot, 'package.json'));
const mediasoup = require('mediasoup');

const OPUS_PT = 100;
const INPUT_SSRC = 11111111;
const PACKETS = 100;
const INTERVAL_MS = 20;
const SRTP_SUITE = 'AES_CM_128_HMAC_SHA1_80';

const mediaCodecs = [
	{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, preferredPayloadType: OPUS_PT },
	{ kind: 'video', mimeType: 'video/VP8', clockRate: 90000 },
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rtpPacket(seq, timestamp) {
	const payload = Buffer.alloc(80, 0xab); // arbitrary "opus" bytes
	const header = Buffer.alloc(12);
	header[0] = 0x80; // V=2, no padding/extension/CSRC
	header[1] = OPUS_PT; // M=0
	header.writeUInt16BE(seq & 0xffff, 2);
	header.writeUInt32BE(timestamp >>> 0, 4);
	header.writeUInt32BE(INPUT_SSRC, 8);
	return Buffer.concat([header, payload]);
}

async function main() {
	// mediasoup 3.19 accepts the binary via createWorker({ workerBin }) (it also
	// honours MEDIASOUP_WORKER_BIN); use the explicit option.
	const worker = await mediasoup.createWorker({ workerBin, logLevel: 'warn' });
	let socket;
	try {
		console.log(`worker pid ${worker.pid}, mediasoup ${mediasoup.version}, bin ${workerBin}`);
		const router = await worker.createRouter({ mediaCodecs });
		const listenInfo = { protocol: 'udp', ip: '127.0.0.1' };

		// A: plain RTP ingress from our UDP socket (comedia learns our port).
		const a = await router.createPlainTransport({ listenInfo, rtcpMux: true, comedia: true });
		const producerA = await a.produce({
			kind: 'audio',
			rtpParameters: {
				codecs: [{ mimeType: 'audio/opus', payloadType: OPUS_PT, clockRate: 48000, channels: 2 }],
				encodings: [{ ssrc: INPUT_SSRC }],
			},
		});

		// B and C: SRTP transports wired to each other. Each side decrypts with
		// the keys the other side generated (transport.srtpParameters).
		const srtpOpts = { listenInfo, rtcpMux: true, comedia: false, enableSrtp: true, srtpCryptoSuite: SRTP_SUITE };
		const b = await router.createPlainTransport(srtpOpts);
		const c = await router.createPlainTransport(srtpOpts);
		await b.connect({ ip: '127.0.0.1', port: c.tuple.localPort, srtpParameters: c.srtpParameters });
		await c.connect({ ip: '127.0.0.1', port: b.tuple.localPort, srtpParameters: b.srtpParameters });

		const consumerB = await b.consume({ producerId: producerA.id, rtpCapabilities: router.rtpCapabilities });
		if (consumerB.paused) await consumerB.resume();

		const { mid: _mid, ...consumerRtpParameters } = consumerB.rtpParameters;
		const producerC = await c.produce({ kind: 'audio', rtpParameters: consumerRtpParameters });

		// Send ~2 s of fake Opus RTP into A.
		socket = dgram.createSocket('udp4');
		await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
		for (let i = 0; i < PACKETS; i++) {
			socket.send(rtpPacket(1000 + i, 960 * i), a.tuple.localPort, '127.0.0.1');
			await sleep(INTERVAL_MS);
		}
		await sleep(500);

		const countOf = (stats, type) => stats.filter((s) => s.type === type).reduce((n, s) => n + (s.packetCount ?? 0), 0);
		const inA = countOf(await producerA.getStats(), 'inbound-rtp');
		const outB = countOf(await consumerB.getStats(), 'outbound-rtp');
		const inC = countOf(await producerC.getStats(), 'inbound-rtp');
		const bStats = (await b.getStats())[0];
		const cStats = (await c.getStats())[0];

		console.log(`sent ${PACKETS} plain RTP packets to A`);
		console.log(`A producer (plain RTP in)      packetCount=${inA}`);
		console.log(`B consumer (SRTP out)          packetCount=${outB}, transport rtpBytesSent=${bStats?.rtpBytesSent}`);
		console.log(`C producer (SRTP in, decrypted) packetCount=${inC}, transport rtpBytesReceived=${cStats?.rtpBytesReceived}`);

		const ok = inA > 0 && outB > 0 && inC > 0;
		console.log(ok ? 'PASS' : 'FAIL');
		return ok;
	} finally {
		socket?.close();
		worker.close();
	}
}

main().then(
	(ok) => process.exit(ok ? 0 : 1),
	(err) => {
		console.error('FAIL:', err);
		process.exit(1);
	},
);

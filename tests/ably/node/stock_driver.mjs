// A stock @ably/ai-transport client driving our server, as an AI Transport front end does:
// it sends a user message with its session's view (published on the channel as ai-input),
// then POSTs the run's Invocation to the app's agent endpoint (ours: /api/ably/invocations),
// waits for the run our server starts and reads its answer off the channel. Prints one JSON
// line. Environment: as stock_client.mjs (CHAT_URL, SESSION_ID, ALICE_TOKEN, ABLY_HOST,
// ABLY_PORT, CHANNEL).
import * as Ably from 'ably';
import { createClientSession, createUIMessageCodec } from '@ably/ai-transport/vercel';

const env = process.env;
const codec = createUIMessageCodec();

async function api(method, path, body) {
  const response = await fetch(`${env.CHAT_URL}${path}`, {
    method,
    headers: { Authorization: `Token ${env.ALICE_TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

const client = new Ably.Realtime({
  authCallback: (_params, callback) => {
    api('POST', `/api/sessions/${env.SESSION_ID}/ably-token`)
      .then(({ body }) => callback(null, body))
      .catch((error) => callback(String(error), null));
  },
  endpoint: env.ABLY_HOST,
  port: Number(env.ABLY_PORT),
  tls: false,
  logLevel: 1,
});

function within(ms, promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)),
  ]);
}

async function main() {
  const session = createClientSession({ client, channelName: env.CHANNEL });
  await session.connect();
  const run = await session.view.send([
    codec.createUserMessage({ id: 'ui-message-1', role: 'user', parts: [{ type: 'text', text: 'driven from ably' }] }),
  ]);
  // What the stock ChatTransport posts, plus a field of the app's own (ignored by us).
  const invoked = await api('POST', '/api/ably/invocations', { ...run.toInvocation().toJSON(), app: 'extra' });
  await within(60_000, run.started, 'run-start');
  await within(
    60_000,
    new Promise((resolve) => {
      const check = () => {
        const info = session.view.runs().find((r) => r.runId === run.runId);
        if (info && info.status !== 'active') resolve();
      };
      session.view.on('run', check);
      session.view.on('update', check);
      check();
    }),
    'the run to end',
  );
  const messages = session.view.getMessages().map(({ codecMessageId, message }) => ({
    codecMessageId,
    role: message.role,
    text: message.parts.filter((p) => p.type === 'text').map((p) => p.text).join(''),
  }));
  const elsewhere = await api('POST', '/api/ably/invocations', {
    inputEventId: 'no-such-event',
    sessionName: env.CHANNEL,
  });
  console.log(
    JSON.stringify({
      invoked,
      runId: run.runId,
      inputCodecMessageId: run.inputCodecMessageId,
      status: session.view.runs().find((r) => r.runId === run.runId).status,
      messages,
      missing: elsewhere,
    }),
  );
  await session.close();
  client.close();
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error && error.stack ? error.stack : String(error));
    process.exit(1);
  },
);

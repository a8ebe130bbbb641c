// A stock @ably/ai-transport client (the Vercel codec's createClientSession on ably-js)
// following one of our sessions through the channel our server mirrors, driven by
// tests/ably/test_node_client.py. It uses only public APIs: our HTTP API (send, change the
// session's options, the ably-token endpoint) and the stock client's session and view.
//
// Steps: a turn streamed to the end; a turn it cancels itself with session.cancel(runId);
// a turn the model fails; then a second client (another member) that joins late and
// rebuilds the conversation from history. Prints one JSON line: {live, late, ...}.
//
// Environment: CHAT_URL, SESSION_ID, ALICE_TOKEN, BOB_TOKEN (API tokens), ABLY_HOST,
// ABLY_PORT, CHANNEL.
import * as Ably from 'ably';
import { createClientSession } from '@ably/ai-transport/vercel';

const env = process.env;
const STEP_TIMEOUT_MS = 60_000;

async function api(token, method, path, body) {
  const response = await fetch(`${env.CHAT_URL}${path}`, {
    method,
    headers: { Authorization: `Token ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}

function ablyClient(token) {
  // Token auth through our endpoint: the server signs a token request for the member.
  return new Ably.Realtime({
    authCallback: (_params, callback) => {
      api(token, 'POST', `/api/sessions/${env.SESSION_ID}/ably-token`)
        .then((request) => callback(null, request))
        .catch((error) => callback(String(error), null));
    },
    endpoint: env.ABLY_HOST,
    port: Number(env.ABLY_PORT),
    tls: false,
    logLevel: 1,
  });
}

// Resolve when `check()` holds, re-checked on every view event (bounded).
function until(session, what, check) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}: ${JSON.stringify(snapshot(session))}`));
    }, STEP_TIMEOUT_MS);
    const test = () => {
      let value;
      try {
        value = check();
      } catch (error) {
        return;
      }
      if (value) {
        clearTimeout(timer);
        off();
        resolve(value);
      }
    };
    const offs = [session.view.on('update', test), session.view.on('run', test)];
    const off = () => offs.forEach((f) => f());
    test();
  });
}

const textOf = (message) => message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');

function snapshot(session) {
  return {
    messages: session.view.getMessages().map(({ codecMessageId, message }) => ({
      codecMessageId,
      id: message.id,
      role: message.role,
      text: textOf(message),
      parts: message.parts.map((p) => p.type),
    })),
    runs: session.view.runs().map((r) => ({
      runId: r.runId,
      clientId: r.clientId,
      status: r.status,
      invocationId: r.invocationId,
      error: r.error ? { code: r.error.code, message: r.error.message } : undefined,
    })),
  };
}

const runOf = (session, runId) => session.view.runs().find((r) => r.runId === runId);
const answerOf = (session, messageId) =>
  session.view.getMessages().find(({ codecMessageId }) => codecMessageId === messageId);

async function main() {
  const errors = [];
  const alice = ablyClient(env.ALICE_TOKEN);
  const session = createClientSession({ client: alice, channelName: env.CHANNEL });
  session.on('error', (error) => errors.push({ code: error.code, message: error.message }));
  await session.connect();

  // 1. A turn streamed to the end, seen live.
  const first = await api(env.ALICE_TOKEN, 'POST', `/api/sessions/${env.SESSION_ID}/turns`, {
    messages: [{ id: 'm-first', role: 'user', parts: [{ type: 'text', text: 'first prompt' }] }],
  });
  const lengths = new Set();
  const growth = session.view.on('update', () => {
    const answer = answerOf(session, first.assistantMessageId);
    if (answer && textOf(answer.message).length > 0) lengths.add(textOf(answer.message).length);
  });
  await until(session, 'the first run to complete', () => runOf(session, first.turnId)?.status === 'complete');
  growth();
  const firstGrowth = lengths.size; // how many lengths the answer had in the view as it grew

  // 2. A turn this client cancels with the stock API, once some of it streamed.
  const second = await api(env.ALICE_TOKEN, 'POST', `/api/sessions/${env.SESSION_ID}/turns`, {
    messages: [{ id: 'm-second', role: 'user', parts: [{ type: 'text', text: 'second prompt' }] }],
  });
  await until(session, 'the second run to stream', () => {
    const answer = answerOf(session, second.assistantMessageId);
    return runOf(session, second.turnId)?.status === 'active' && answer && textOf(answer.message).length > 0;
  });
  await session.cancel(second.turnId);
  await until(session, 'the second run to end cancelled', () => runOf(session, second.turnId)?.status === 'cancelled');
  const secondTurn = await api(env.ALICE_TOKEN, 'GET', `/api/sessions/${env.SESSION_ID}/turns/${second.turnId}`);

  // 3. A turn the model fails after three tokens.
  await api(env.ALICE_TOKEN, 'PATCH', `/api/sessions/${env.SESSION_ID}`, {
    modelOptions: { tokens: 40, rate: 200, failAfter: 3 },
  });
  const third = await api(env.ALICE_TOKEN, 'POST', `/api/sessions/${env.SESSION_ID}/turns`, {
    messages: [{ id: 'm-third', role: 'user', parts: [{ type: 'text', text: 'third prompt' }] }],
  });
  await until(session, 'the third run to fail', () => runOf(session, third.turnId)?.status === 'error');

  const live = snapshot(session);

  // 4. Another member joins late: the conversation from history.
  const bob = ablyClient(env.BOB_TOKEN);
  const late = createClientSession({ client: bob, channelName: env.CHANNEL });
  await late.connect();
  while (late.view.hasOlder()) {
    if ((await late.view.loadOlder(100)).length === 0) break;
  }
  const lateView = snapshot(late);

  console.log(
    JSON.stringify({
      turns: { first, second, third },
      live,
      late: lateView,
      firstGrowth,
      secondTurn,
      errors,
      clientIds: { alice: alice.auth.clientId, bob: bob.auth.clientId },
    }),
  );
  await session.close();
  await late.close();
  alice.close();
  bob.close();
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error && error.stack ? error.stack : String(error));
    process.exit(1);
  },
);

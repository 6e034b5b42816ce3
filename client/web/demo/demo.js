// A small group chat on the Convoke web SDK: connect, create or join groups, invite,
// send and receive messages, and the group events, over WebTransport.
// Served by `npm run demo` (demo/serve.mjs), which gives the page the broker's URL and
// development certificate hash (/demo/config.json) and mints tokens (/demo/token).
import { connect } from '../build/src/index.js';

const $ = (id) => document.getElementById(id);
const text = new TextDecoder();
let connection = null;
let me = '';
let current = null;
const names = new Map();

function hexBytes(hex) {
  return new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
}

function log(line) {
  const li = document.createElement('li');
  li.textContent = line;
  $('events').prepend(li);
}

function showMessage(m) {
  if (m.groupId !== current) return;
  const li = document.createElement('li');
  const who = document.createElement('b');
  who.textContent = `${m.from}: `;
  li.append(who, text.decode(m.payload));
  $('messages').append(li);
  $('messages').scrollTop = $('messages').scrollHeight;
}

async function refreshGroups() {
  const groups = await connection.getJoinedGroups({ pageNum: 1, pageSize: 100 });
  $('groups').replaceChildren(...groups.map((g) => {
    names.set(g.groupid, g.groupname);
    const li = document.createElement('li');
    li.textContent = `${g.groupname} (${g.groupid})`;
    li.dataset.id = g.groupid;
    li.className = g.groupid === current ? 'selected' : '';
    li.onclick = () => select(g.groupid);
    return li;
  }));
}

async function select(groupId) {
  current = groupId;
  $('title').textContent = `${names.get(groupId) ?? 'group'} (${groupId})`;
  $('messages').replaceChildren();
  const members = await connection.listGroupMembers({ groupId, pageNum: 1, pageSize: 100 });
  $('members').textContent = 'members: ' + members.map((m) => m.owner ? `${m.owner} (owner)` : m.member).join(', ');
  const history = await connection.getGroupMessages({ groupId, limit: 50 });
  for (const m of history) showMessage(m);
  await refreshGroups();
}

function guard(form, action) {
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!connection && form.id !== 'login') return;
    try {
      await action();
    } catch (err) {
      log(`error: ${err.message ?? err}`);
    }
  });
}

guard($('login'), async () => {
  me = $('user').value.trim();
  const config = await (await fetch('/demo/config.json')).json();
  const { token } = await (await fetch(`/demo/token?user=${encodeURIComponent(me)}`)).json();
  $('status').textContent = 'connecting…';
  connection = await connect({
    url: config.url,
    token,
    deviceId: 'demo',
    serverCertificateHashes: config.certSha256 ? [{ algorithm: 'sha-256', value: hexBytes(config.certSha256) }] : undefined,
    handlers: {
      demo: {
        onGroupEvent: (e) => {
          log(`${e.operation} in ${e.groupName || e.groupId} by ${e.from}${e.users.length ? ` (${e.users.join(', ')})` : ''}`);
          void refreshGroups();
        },
        onGroupMessage: showMessage,
        onDisconnected: (err) => { $('status').textContent = `disconnected: ${err.message}`; },
      },
    },
  });
  $('status').textContent = `connected as ${me}`;
  document.body.dataset.connected = 'true';
  await refreshGroups();
});

guard($('create'), async () => {
  const groupname = $('groupname').value;
  const { groupid } = await connection.createGroup({
    data: { groupname, desc: '', members: [], public: true, approval: false, allowinvites: true, inviteNeedConfirm: false, ext: {} },
  });
  $('groupname').value = '';
  names.set(groupid, groupname);
  await select(groupid);
});

guard($('join'), async () => {
  const groupId = $('joinid').value.trim();
  await connection.joinGroup({ groupId, message: `${me} would like to join` });
  $('joinid').value = '';
  await select(groupId);
});

guard($('send'), async () => {
  if (!current) return;
  const payload = $('text').value;
  $('text').value = '';
  const sent = await connection.sendGroupMessage({ groupId: current, payload });
  showMessage({ groupId: current, from: me, payload: new TextEncoder().encode(payload), msgId: sent.msgId });
});

guard($('invite'), async () => {
  if (!current) return;
  await connection.inviteUsersToGroup({ groupId: current, users: [$('invitee').value.trim()] });
  $('invitee').value = '';
  await select(current);
});

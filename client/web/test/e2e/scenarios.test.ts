/**
 * The seed's scenarios from browsers: three or four pages (alice the owner, bob and carol,
 * dave who never joins) against a real broker over WebTransport, each step checked by its
 * answer and by the events each page receives, and does not receive.
 */

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Server } from 'node:http';
import type { Browser } from 'playwright-core';
import { BrokerProcess, eventually, launchChromium, missingTool, serveStatic, WEB_DIR, WebUser } from './harness.js';

const skip = missingTool();

describe('seed scenarios between browsers', { skip }, () => {
  let broker: BrokerProcess;
  let browser: Browser;
  let http: { server: Server; origin: string };
  let alice: WebUser, bob: WebUser, carol: WebUser, dave: WebUser;
  let groupId = '';

  /** Waits until `who` has received `op` for the group; returns how many it has. */
  async function hears(who: WebUser, op: string, gid = groupId): Promise<void> {
    await eventually(`${who.user} receives ${op}`, async () => (await who.ops(gid)).includes(op));
  }
  /** After a marker event everyone got later, `who` still has no `op` for the group. */
  async function neverHears(who: WebUser, op: string, gid = groupId): Promise<void> {
    assert.ok(!(await who.ops(gid)).includes(op), `${who.user} received ${op}: ${(await who.ops(gid)).join(', ')}`);
  }
  async function count(who: WebUser, op: string, gid = groupId): Promise<number> {
    return (await who.ops(gid)).filter((o) => o === op).length;
  }

  before(async () => {
    broker = new BrokerProcess();
    await broker.start();
    http = await serveStatic(WEB_DIR);
    browser = await launchChromium();
    [alice, bob, carol, dave] = await Promise.all(
      ['alice', 'bob', 'carol', 'dave'].map((n) => WebUser.open(browser, http.origin, broker, n)),
    ) as [WebUser, WebUser, WebUser, WebUser];
  });
  after(async () => {
    await browser?.close();
    http?.server.close();
    await broker?.stop();
  });

  test('invite and accept', async () => {
    groupId = await alice.ok("connection.createGroup({data: {groupname: 'club', desc: 'd', members: [], public: true, approval: true, allowinvites: false, inviteNeedConfirm: true, ext: {}}}).then(r => r.groupid)");
    await alice.ok("connection.inviteUsersToGroup({groupId, users: ['bob']})", { groupId });
    await hears(bob, 'inviteToJoin');
    await bob.ok("connection.acceptGroupInvite({invitee: 'bob', groupId})", { groupId });
    await hears(alice, 'acceptInvite');
    // memberPresence goes to the members, the new one included (seed), on the accepting page too.
    await hears(bob, 'memberPresence');
    await eventually('alice sees bob arrive', async () =>
      (await alice.events()).some((e) => e.groupId === groupId && e.operation === 'memberPresence' && e.users.includes('bob')));
    // Not for the inviter's own session, nor anyone outside.
    await neverHears(alice, 'inviteToJoin');
    for (const outsider of [carol, dave]) assert.deepEqual(await outsider.ops(groupId), []);
  });

  test('join request and approval', async () => {
    await carol.ok("connection.joinGroup({groupId, message: 'let me in'})", { groupId });
    await hears(alice, 'requestToJoin');
    await alice.ok("connection.acceptGroupJoinRequest({applicant: 'carol', groupId})", { groupId });
    await hears(carol, 'acceptRequest');
    await hears(bob, 'memberPresence');
    await eventually('bob sees carol arrive', async () =>
      (await bob.events()).some((e) => e.groupId === groupId && e.operation === 'memberPresence' && e.users.includes('carol')));
    // The request went to the owner (and admins) only; the outcome to the applicant only.
    await neverHears(bob, 'requestToJoin');
    await neverHears(bob, 'acceptRequest');
    await neverHears(alice, 'acceptRequest');
    assert.deepEqual(await dave.ops(groupId), []);
    const members = await bob.ok('connection.listGroupMembers({groupId, pageNum: 1, pageSize: 20})', { groupId });
    assert.equal(members.length, 3);
  });

  test('mute with expiry', async () => {
    await alice.ok("connection.muteGroupMember({groupId, username: 'bob', muteDuration: 1500})", { groupId });
    await hears(bob, 'muteMember');
    await hears(carol, 'muteMember');
    await bob.fails("connection.sendGroupMessage({groupId, payload: 'muted?'})", 507, { groupId });
    // The mute ends by itself.
    await eventually('the mute expires', async () => (await bob.run("connection.sendGroupMessage({groupId, payload: 'free again'})", { groupId })).ok, 10_000);
    assert.equal(await bob.ok('connection.isInGroupMutelist({groupId})', { groupId }), false);
    await eventually('carol gets the message', async () => (await carol.messages()).some((m) => m.groupId === groupId && m.from === 'bob'));
    assert.deepEqual(await dave.ops(groupId), []);
    assert.deepEqual(await dave.messages(), []);
  });

  test('mute-all with an allow list', async () => {
    await alice.ok('connection.disableSendGroupMsg({groupId})', { groupId });
    await hears(bob, 'muteAllMembers');
    await hears(carol, 'muteAllMembers');
    await bob.fails("connection.sendGroupMessage({groupId, payload: 'x'})", 506, { groupId });
    await alice.ok("connection.addUsersToGroupAllowlist({groupId, users: ['bob']})", { groupId });
    await hears(bob, 'addUserToAllowlist');
    await neverHears(carol, 'addUserToAllowlist');
    const before = (await carol.messages()).length;
    const { msgId } = await bob.ok("connection.sendGroupMessage({groupId, payload: 'allowed'})", { groupId });
    await carol.fails("connection.sendGroupMessage({groupId, payload: 'not allowed'})", 506, { groupId });
    // Muted members still receive.
    await eventually('carol receives the allowed message', async () => (await carol.messages()).some((m) => m.msgId === msgId));
    assert.equal((await carol.messages()).length, before + 1);
    await alice.ok('connection.enableSendGroupMsg({groupId})', { groupId });
    await hears(carol, 'unmuteAllMembers');
    await carol.ok("connection.sendGroupMessage({groupId, payload: 'back'})", { groupId });
  });

  test('announcement and member attributes', async () => {
    await alice.ok("connection.updateGroupAnnouncement({groupId, announcement: 'meeting at 5'})", { groupId });
    await hears(bob, 'updateAnnouncement');
    await hears(carol, 'updateAnnouncement');
    assert.deepEqual(await dave.ok('connection.fetchGroupAnnouncement({groupId})', { groupId }), { announcement: 'meeting at 5' });
    await bob.ok("connection.setGroupMemberAttributes({groupId, userId: 'bob', memberAttributes: {nickname: 'bobby'}})", { groupId });
    await hears(alice, 'memberAttributesUpdate');
    await hears(carol, 'memberAttributesUpdate');
    await neverHears(bob, 'memberAttributesUpdate');
    assert.deepEqual(await carol.ok("connection.getGroupMemberAttributes({groupId, userId: 'bob'})", { groupId }), { nickname: 'bobby' });
    assert.deepEqual(await dave.ops(groupId), []);
  });

  test('a shared file with progress', async () => {
    const size = 1_500_000;
    const result = await bob.ok(
      `(async () => { const progress = [];
        const entry = await connection.uploadGroupSharedFile({ groupId, file: new File([new Uint8Array(${size}).fill(1)], 'big.bin'),
          onFileUploadProgress: (p) => progress.push(p) });
        return { entry, progress }; })()`,
      { groupId },
    );
    assert.equal(result.entry.file_size, size);
    assert.equal(result.entry.file_owner, 'bob');
    const loaded = result.progress.map((p: any) => p.loaded ?? p.sent ?? p.bytes);
    assert.ok(result.progress.length >= 2, JSON.stringify(result.progress));
    assert.deepEqual([...loaded].sort((a, b) => a - b), loaded, 'progress goes forward');
    assert.equal(loaded.at(-1), size, JSON.stringify(result.progress.at(-1)));
    await hears(alice, 'uploadFile');
    await hears(carol, 'uploadFile');
    const got = await carol.ok('connection.downloadGroupSharedFile({groupId, fileId}).then(async (b) => [b.size, new Uint8Array(await b.arrayBuffer()).every((x) => x === 1)])', { groupId, fileId: result.entry.file_id });
    assert.deepEqual(got, [size, true]);
    // A cancelled upload: the page hears it, the promise rejects with 101, and the group's
    // list holds only the finished file.
    const cancelled = await carol.ok(
      `(async () => { let canceled = false; let sent = 0;
        const t = connection.uploadGroupSharedFile({ groupId, file: new File([new Uint8Array(8_000_000)], 'huge.bin'),
          onFileUploadProgress: (p) => { sent = p.loaded; if (sent > 0) t.cancel(); }, onFileUploadCanceled: () => { canceled = true; } });
        const r = await t.then(() => 'finished', (e) => e.code);
        return { r, canceled }; })()`,
      { groupId },
    );
    assert.deepEqual(cancelled, { r: 101, canceled: true });
    const list = await alice.ok('connection.getGroupSharedFilelist({groupId, pageNum: 1, pageSize: 10})', { groupId });
    assert.deepEqual(list.map((f: any) => f.file_name), ['big.bin']);
    // Not a member: no download.
    await dave.fails('connection.downloadGroupSharedFile({groupId, fileId})', 602, { groupId, fileId: result.entry.file_id });
  });

  test('block', async () => {
    await alice.ok("connection.blockGroupMember({groupId, username: 'carol'})", { groupId });
    await hears(carol, 'removeMember');
    await eventually('bob sees carol go', async () =>
      (await bob.events()).some((e) => e.groupId === groupId && e.operation === 'memberAbsence' && e.users.includes('carol')));
    await carol.fails("connection.sendGroupMessage({groupId, payload: 'still here?'})", 602, { groupId });
    await carol.fails("connection.joinGroup({groupId, message: 'again'})", 603, { groupId }).catch(async (e) => {
      // Any refusal will do, but it must be one.
      const r = await carol.run("connection.joinGroup({groupId, message: 'again'})", { groupId });
      assert.equal(r.ok, false, `${String(e)}`);
    });
    const carolHad = (await carol.messages()).length;
    const { msgId } = await bob.ok("connection.sendGroupMessage({groupId, payload: 'carol is gone'})", { groupId });
    await eventually('alice gets it', async () => (await alice.messages()).some((m) => m.msgId === msgId));
    assert.equal((await carol.messages()).length, carolHad, 'a blocked user still received a message');
  });

  test('owner transfer, then destroy', async () => {
    await alice.ok("connection.changeGroupOwner({groupId, newOwner: 'bob'})", { groupId });
    await hears(bob, 'changeOwner');
    const r = await alice.run('connection.destroyGroup({groupId})', { groupId });
    assert.equal(r.ok, false, 'the old owner destroyed the group');
    const [info] = await alice.ok('connection.getGroupInfo({groupId})', { groupId });
    assert.equal(info.owner, 'bob');
    await bob.ok('connection.destroyGroup({groupId})', { groupId });
    await hears(alice, 'destroy');
    await neverHears(carol, 'destroy');
    assert.deepEqual(await dave.ops(groupId), []);
    const [gone] = await dave.ok('connection.getGroupInfo({groupId})', { groupId });
    assert.equal(gone.error?.code, 605);
  });
});

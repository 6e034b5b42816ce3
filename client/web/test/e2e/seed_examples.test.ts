/**
 * Every example call of the seed document (spec/seed-group-api.txt), as written there, run
 * from pages in headless Chromium against a real broker over WebTransport.
 *
 * The calls are the seed's text. Only the placeholders that stand for ids the broker
 * allocates are bound to real values: the string literals 'groupId', 'fileId', 'msgId' and
 * 'file object' become variables of those names (and `groupId` in `getGroupInfo({groupId:
 * groupId})` already is one). User names are the seed's own ('myUserId', 'user1', 'user2',
 * 'userId'): each is a page logged in as that user. Each call runs from the page of the user
 * the seed means (the invitee accepts its own invite, the owner moderates), after setup
 * calls that give it something to act on; each result is checked.
 */

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Server } from 'node:http';
import type { Browser } from 'playwright-core';
import { BrokerProcess, eventually, launchChromium, missingTool, serveStatic, WEB_DIR, WebUser } from './harness.js';

const skip = missingTool();

/** The seed's text with the allocated-id placeholders turned into variables. */
function bind(call: string): string {
  return call
    .replace(/'groupId'/g, 'groupId')
    .replace(/'fileId'/g, 'fileId')
    .replace(/'msgId'/g, 'msgId')
    .replace(/'file object'/g, 'file');
}

const CREATE = `connection.createGroup({
data: {
groupname: 'groupname',
desc: 'this is my group',
members: ['user1', 'user2'],
public: true,
approval: false,
allowinvites: true,
inviteNeedConfirm: false,
ext: {info: 'group info'}
}
})`;

/** A plain group for setup: `owner` creates it with `members`. */
function group(opts: { members?: string[]; approval?: boolean; confirm?: boolean; pub?: boolean } = {}): string {
  return `connection.createGroup({data: {groupname: 'setup', desc: '', members: ${JSON.stringify(opts.members ?? [])}, public: ${opts.pub ?? true}, approval: ${opts.approval ?? false}, allowinvites: true, inviteNeedConfirm: ${opts.confirm ?? false}, ext: {}}}).then(r => r.groupid)`;
}

describe('the seed examples from a browser', { skip }, () => {
  let broker: BrokerProcess;
  let browser: Browser;
  let http: { server: Server; origin: string };
  const u: Record<string, WebUser> = {};
  let seen = new Set<string>();

  /** Runs the seed's `call` from `who`'s page with the ids bound; checks it succeeded. */
  async function seed(who: string, call: string, vars: Record<string, unknown>): Promise<any> {
    seen.add(/connection\.(\w+)\(/.exec(call)![1]!);
    return u[who]!.ok(bind(call), vars);
  }
  async function seedFails(who: string, call: string, vars: Record<string, unknown>, code: number): Promise<string> {
    seen.add(/connection\.(\w+)\(/.exec(call)![1]!);
    return u[who]!.fails(bind(call), code, vars);
  }

  before(async () => {
    broker = new BrokerProcess();
    await broker.start();
    http = await serveStatic(WEB_DIR);
    browser = await launchChromium();
    for (const name of ['owner', 'myUserId', 'user1', 'user2', 'userId']) {
      u[name] = await WebUser.open(browser, http.origin, broker, name);
    }
  });
  after(async () => {
    await browser?.close();
    http?.server.close();
    await broker?.stop();
  });

  test('group lifecycle, roles, info, announcement, members', async () => {
    const { groupid: groupId } = await seed('owner', CREATE, {});
    assert.match(groupId, /^\d+$/);
    const v = { groupId };
    const [info] = await seed('owner', 'connection.getGroupInfo({groupId: groupId})', v);
    assert.equal(info.name, 'groupname');
    assert.equal(info.description, 'this is my group');
    assert.equal(info.affiliations_count, 3);
    await seed('owner', "connection.modifyGroup({groupId: 'groupId', groupName: 'groupName', description:'description'})", v);
    const [renamed] = await u.owner!.ok('connection.getGroupInfo({groupId})', v);
    assert.equal(renamed.name, 'groupName');
    assert.equal(renamed.description, 'description');
    await seed('owner', "connection.updateGroupAnnouncement({groupId: 'groupId', announcement: 'hello'})", v);
    assert.deepEqual(await seed('user1', "connection.fetchGroupAnnouncement({groupId: 'groupId'})", v), { announcement: 'hello' });
    const members = await seed('owner', "connection.listGroupMembers({pageNum: 1, pageSize: 20, groupId: 'groupId'})", v);
    assert.deepEqual(members.map((m: any) => m.owner ?? m.member).sort(), ['owner', 'user1', 'user2']);
    await seed('owner', "connection.setGroupAdmin({groupId: 'groupId', username: 'user1'})", v);
    assert.deepEqual(await seed('user2', "connection.getGroupAdmin({groupId: 'groupId'})", v), ['user1']);
    await seed('owner', "connection.removeGroupAdmin({groupId: 'groupId', username: 'user1'})", v);
    assert.deepEqual(await u.user2!.ok('connection.getGroupAdmin({groupId})', v), []);
    const page = await seed('userId', 'connection.getPublicGroups({limit: 20, cursor: null})', v);
    assert.ok(JSON.stringify(page).includes(groupId), JSON.stringify(page));
    // user2 leaves; userId joins (public, no approval) and sets its own attributes.
    await seed('user2', "connection.leaveGroup({groupId: 'groupId'})", v);
    await seed('userId', "connection.joinGroup({groupId: 'groupId', message: 'I want to join the group'})", v);
    await seed('userId', "connection.setGroupMemberAttributes({groupId: 'groupId', userId: 'userId', memberAttributes: {key: 'value'}})", v);
    assert.deepEqual(await seed('user1', "connection.getGroupMemberAttributes({groupId: 'groupId', userId: 'userId'})", v), { key: 'value' });
    const attrs = await seed('user1', "connection.getGroupMembersAttributes({groupId: 'groupId', userIds: ['userId'], keys: ['avatar', 'nickname']})", v);
    assert.deepEqual(attrs, { userId: {} });
    // A message and who read it; the member who blocks the group's messages.
    const { msgId } = await u.owner!.ok("connection.sendGroupMessage({groupId, payload: 'hi', allowGroupAck: true})", v);
    await eventually('user1 has the message', async () => (await u.user1!.messages()).some((m) => m.msgId === msgId));
    await u.user1!.ok('connection.ackGroupMessage({groupId, msgId})', { ...v, msgId });
    await eventually('user1 is a reader', async () =>
      JSON.stringify(await u.owner!.ok(bind("connection.getGroupMsgReadUser({groupId: 'groupId', msgId: 'msgId'})"), { ...v, msgId })).includes('user1'));
    await seed('owner', "connection.getGroupMsgReadUser({groupId: 'groupId', msgId: 'msgId'})", { ...v, msgId });
    await seed('userId', "connection.blockGroupMessages({groupId: 'groupId'})", v);
    // The owner removes user1 and destroys the group.
    await seed('owner', "connection.removeGroupMember({groupId: 'groupId', username: 'user1'})", v);
    await seed('owner', "connection.destroyGroup({groupId: 'groupId'})", v);
    const [gone] = await u.owner!.ok('connection.getGroupInfo({groupId})', v);
    assert.equal(gone.error?.code, 605, JSON.stringify(gone));
  });

  test('mute, mute-all, allow list, block list', async () => {
    const groupId = await u.owner!.ok(group({ members: ['user1', 'user2'] }));
    const v = { groupId };
    // `'user1' || ['user1', 'user2']` is 'user1' in JavaScript: the seed mutes user1.
    await seed('owner', "connection.muteGroupMember({username: 'user1' || ['user1', 'user2'], muteDuration: -1, groupId: 'groupId'})", v);
    const mutes = await seed('owner', "connection.getGroupMutelist({groupId: 'groupId'})", v);
    assert.deepEqual(mutes.map((m: any) => m.user), ['user1']);
    assert.equal(await seed('user1', "connection.isInGroupMutelist({groupId: 'groupId'})", v), true);
    assert.equal(await u.user2!.ok('connection.isInGroupMutelist({groupId})', v), false);
    await seed('owner', "connection.unmuteGroupMember({groupId: 'groupId', username: 'user1' || ['user1', 'user2']})", v);
    assert.equal(await u.user1!.ok('connection.isInGroupMutelist({groupId})', v), false);
    await seed('owner', "connection.disableSendGroupMsg({groupId: 'groupId'})", v);
    await u.user1!.fails("connection.sendGroupMessage({groupId, payload: 'x'})", 506, v);
    await seed('owner', "connection.enableSendGroupMsg({groupId: 'groupId'})", v);
    await u.user1!.ok("connection.sendGroupMessage({groupId, payload: 'x'})", v);
    // The seed's example names no users: refused before sending (-3), naming the option.
    const why = await seedFails('owner', "connection.addUsersToGroupAllowlist({groupId: 'groupId'})", v, -3);
    assert.match(why, /users/);
    await u.owner!.ok("connection.addUsersToGroupAllowlist({groupId, users: ['user1']})", v);
    assert.deepEqual(await seed('owner', "connection.getGroupAllowlist({groupId: 'groupId'})", v), ['user1']);
    assert.equal(await seed('user1', "connection.isInGroupAllowlist({groupId: 'groupId', userName: 'user1'})", v), true);
    await seed('owner', "connection.removeGroupAllowlistMember({groupId: 'groupId', userName: 'user1'})", v);
    assert.deepEqual(await u.owner!.ok('connection.getGroupAllowlist({groupId})', v), []);
    await seed('owner', "connection.blockGroupMembers({usernames: ['user1', 'user2'], groupId: 'groupId'})", v);
    assert.deepEqual((await u.owner!.ok('connection.getGroupBlocklist({groupId})', v)).sort(), ['user1', 'user2']);
    await seed('owner', "connection.unblockGroupMembers({groupId: 'groupId', usernames: ['user1', 'user2']})", v);
    assert.deepEqual(await u.owner!.ok('connection.getGroupBlocklist({groupId})', v), []);
    // Unblocked is not a member again: user1 is brought back to be blocked alone.
    await u.owner!.ok("connection.inviteUsersToGroup({groupId, users: ['user1']})", v);
    await seed('owner', "connection.blockGroupMember({groupId: 'groupId', username: 'user1'})", v);
    assert.deepEqual(await seed('owner', "connection.getGroupBlocklist({groupId: 'groupId'})", v), ['user1']);
    // The seed's example names no user: -3 before sending.
    await seedFails('owner', "connection.unblockGroupMember({groupId: 'groupId'})", v, -3);
  });

  test('invitations, join requests, owner transfer, bulk removal', async () => {
    // Invitations that need confirming: myUserId accepts one, rejects another.
    for (const [verb, call] of [
      ['accept', "connection.acceptGroupInvite({invitee: 'myUserId', groupId: 'groupId'})"],
      ['reject', "connection.rejectGroupInvite({invitee: 'myUserId', groupId: 'groupId'})"],
    ] as const) {
      const groupId = await u.owner!.ok(group({ confirm: true, pub: false }));
      await u.owner!.ok("connection.inviteUsersToGroup({groupId, users: ['myUserId']})", { groupId });
      await eventually(`myUserId invited (${verb})`, async () => (await u.myUserId!.ops(groupId)).includes('inviteToJoin'));
      await seed('myUserId', call, { groupId });
      // A private group: its info is the member's, or a per-id 602 for anyone else.
      const [entry] = await u.myUserId!.ok('connection.getGroupInfo({groupId})', { groupId });
      assert.equal(entry.error?.code, verb === 'accept' ? undefined : 602, JSON.stringify(entry));
    }
    // The seed's inviteUsersToGroup: user1 and user2 join directly (confirm off).
    const invited = await u.owner!.ok(group());
    await seed('owner', "connection.inviteUsersToGroup({groupId: 'groupId', users: ['user1', 'user2']})", { groupId: invited });
    const members = await u.owner!.ok('connection.listGroupMembers({groupId, pageNum: 1, pageSize: 20})', { groupId: invited });
    assert.equal(members.length, 3);
    // Join requests: accepted in one group, declined in another.
    const accepting = await u.owner!.ok(group({ approval: true }));
    await seed('user1', "connection.joinGroup({groupId: 'groupId', message: 'I want to join the group'})", { groupId: accepting });
    await eventually('owner sees the request', async () => (await u.owner!.ops(accepting)).includes('requestToJoin'));
    await seed('owner', "connection.acceptGroupJoinRequest({applicant: 'user1', groupId: 'groupId'})", { groupId: accepting });
    await eventually('user1 accepted', async () => (await u.user1!.ops(accepting)).includes('acceptRequest'));
    const declining = await u.owner!.ok(group({ approval: true }));
    await u.user1!.ok("connection.joinGroup({groupId, message: 'please'})", { groupId: declining });
    await seed('owner', "connection.rejectGroupJoinRequest({applicant: 'user1', groupId: 'groupId', reason: 'I do not like you'})", { groupId: declining });
    await eventually('user1 declined', async () => (await u.user1!.ops(declining)).includes('joinPublicGroupDeclined'));
    // Owner transfer, then bulk removal by the new owner's predecessor is refused.
    await seed('owner', "connection.changeGroupOwner({groupId: 'groupId', newOwner: 'user1'})", { groupId: invited });
    const [info] = await u.user2!.ok('connection.getGroupInfo({groupId})', { groupId: invited });
    assert.equal(info.owner, 'user1');
    const bulk = await u.owner!.ok(group({ members: ['user1', 'user2'] }));
    await seed('owner', "connection.removeGroupMembers({groupId: 'groupId', users: ['user1', 'user2']})", { groupId: bulk });
    assert.equal((await u.owner!.ok('connection.listGroupMembers({groupId, pageNum: 1, pageSize: 20})', { groupId: bulk })).length, 1);
  });

  test('a shared file: upload with progress, download, delete', async () => {
    const groupId = await u.owner!.ok(group({ members: ['user1'] }));
    const page = u.owner!.page;
    // The seed's callbacks are names it leaves to the page: bound here to recorders.
    await page.evaluate(() => {
      const w = window as unknown as Record<string, any>;
      w.progress = [];
      w.uploaded = null;
      w.file = new File([new Uint8Array(300_000).fill(7)], 'notes.bin', { type: 'application/octet-stream' });
    });
    const vars = { groupId };
    const uploaded = await u.owner!.ok(
      `(() => { const w = window; const onFileUploadProgress = (p) => w.progress.push(p); const onFileUploadComplete = (f) => { w.uploaded = f; };
        const onFileUploadError = (e) => { w.uploadError = String(e); }; const onFileUploadCanceled = () => { w.canceled = true; }; const file = w.file;
        return ${bind("connection.uploadGroupSharedFile({groupId: 'groupId', file: 'file object', onFileUploadProgress: onFileUploadProgress, onFileUploadComplete: onFileUploadComplete,onFileUploadError:onFileUploadError,onFileUploadCanceled:onFileUploadCanceled})")}; })()`,
      vars,
    );
    seen.add('uploadGroupSharedFile');
    assert.equal(uploaded.file_size, 300_000);
    const progress = await page.evaluate(() => (window as unknown as Record<string, any>).progress);
    assert.ok(progress.length >= 1, 'no progress reported');
    await eventually('user1 hears of the file', async () => (await u.user1!.ops(groupId)).includes('uploadFile'));
    const fileId = uploaded.file_id;
    const size = await u.user1!.ok(
      `(async () => { let done = null; const console = { log: (d) => { done = d; } };
        const blob = await ${bind("connection.downloadGroupSharedFile({groupId: 'groupId', fileId: 'fileId', onFileDownloadComplete: (data)=>{console.log(data)}})")};
        return [blob.size, done && done.size]; })()`,
      { groupId, fileId },
    );
    seen.add('downloadGroupSharedFile');
    assert.deepEqual(size, [300_000, 300_000]);
    await seed('owner', "connection.deleteGroupSharedFile({groupId: 'groupId', fileId: 'fileId'})", { groupId, fileId });
    await eventually('user1 hears of the deletion', async () => (await u.user1!.ops(groupId)).includes('deleteFile'));
  });

  test('every example call of the seed ran', () => {
    const all = ['acceptGroupInvite', 'acceptGroupJoinRequest', 'addUsersToGroupAllowlist', 'blockGroupMember', 'blockGroupMembers', 'blockGroupMessages', 'changeGroupOwner', 'createGroup', 'deleteGroupSharedFile', 'destroyGroup', 'disableSendGroupMsg', 'downloadGroupSharedFile', 'enableSendGroupMsg', 'fetchGroupAnnouncement', 'getGroupAdmin', 'getGroupAllowlist', 'getGroupBlocklist', 'getGroupInfo', 'getGroupMemberAttributes', 'getGroupMembersAttributes', 'getGroupMsgReadUser', 'getGroupMutelist', 'getPublicGroups', 'inviteUsersToGroup', 'isInGroupAllowlist', 'isInGroupMutelist', 'joinGroup', 'leaveGroup', 'listGroupMembers', 'modifyGroup', 'muteGroupMember', 'rejectGroupInvite', 'rejectGroupJoinRequest', 'removeGroupAdmin', 'removeGroupAllowlistMember', 'removeGroupMember', 'removeGroupMembers', 'setGroupAdmin', 'setGroupMemberAttributes', 'unblockGroupMember', 'unblockGroupMembers', 'unmuteGroupMember', 'updateGroupAnnouncement', 'uploadGroupSharedFile'];
    assert.deepEqual(all.filter((m) => !seen.has(m)), []);
    seen = new Set();
  });
});

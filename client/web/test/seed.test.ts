/**
 * Every example call of the seed document (spec/seed-group-api.txt), copied verbatim and
 * run as written against a fake broker: the request each puts on the wire and what it
 * resolves to. The two file calls' examples run in files.test.ts.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Connection, ConvokeError, type Request, type Response } from '../src/index.js';
import { FakeBroker } from './fake_broker.js';

interface Example {
  /** The call as the seed writes it. */
  call: string;
  /** The request it sends, or the -3 message when the seed's own example omits a required option. */
  sends: Request | { refused: string };
  answer?: Response;
  resolves?: unknown;
}

const g = 'groupId';

const EXAMPLES: Example[] = [
  { call: "connection.acceptGroupInvite({invitee: 'myUserId', groupId: 'groupId'})", sends: { method: 'acceptGroupInvite', groupId: g, invitee: 'myUserId' } },
  { call: "connection.acceptGroupJoinRequest({applicant: 'user1', groupId: 'groupId'})", sends: { method: 'acceptGroupJoinRequest', groupId: g, applicant: 'user1' } },
  // The seed's example names no users: refused before sending, naming the option.
  { call: "connection.addUsersToGroupAllowlist({groupId: 'groupId'})", sends: { refused: 'addUsersToGroupAllowlist: users must be an array of strings, got undefined' } },
  { call: "connection.blockGroupMember({groupId: 'groupId', username: 'user1'})", sends: { method: 'blockGroupMember', groupId: g, username: 'user1' } },
  { call: "connection.blockGroupMembers({usernames: ['user1', 'user2'], groupId: 'groupId'})", sends: { method: 'blockGroupMembers', groupId: g, usernames: ['user1', 'user2'] } },
  { call: "connection.blockGroupMessages({groupId: 'groupId'})", sends: { method: 'blockGroupMessages', groupId: g } },
  { call: "connection.changeGroupOwner({groupId: 'groupId', newOwner: 'user1'})", sends: { method: 'changeGroupOwner', groupId: g, newOwner: 'user1' } },
  {
    call: `connection.createGroup({
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
})`,
    sends: {
      method: 'createGroup',
      data: {
        groupname: 'groupname',
        desc: 'this is my group',
        members: ['user1', 'user2'],
        public: true,
        approval: false,
        allowinvites: true,
        inviteNeedConfirm: false,
        maxusers: null,
        ext: '{"info":"group info"}',
      },
    },
    answer: { type: 'groupCreated', groupId: '18446744073709551615' },
    resolves: { groupid: '18446744073709551615' },
  },
  { call: "connection.deleteGroupSharedFile({groupId: 'groupId', fileId: 'fileId'})", sends: { method: 'deleteGroupSharedFile', groupId: g, fileId: 'fileId' } },
  { call: "connection.destroyGroup({groupId: 'groupId'})", sends: { method: 'destroyGroup', groupId: g } },
  { call: "connection.disableSendGroupMsg({groupId: 'groupId'})", sends: { method: 'disableSendGroupMsg', groupId: g } },
  { call: "connection.enableSendGroupMsg({groupId: 'groupId'})", sends: { method: 'enableSendGroupMsg', groupId: g } },
  {
    call: "connection.fetchGroupAnnouncement({groupId: 'groupId'})",
    sends: { method: 'fetchGroupAnnouncement', groupId: g },
    answer: { type: 'announcement', announcement: 'hello' },
    resolves: { announcement: 'hello' },
  },
  { call: "connection.getGroupAdmin({groupId: 'groupId'})", sends: { method: 'getGroupAdmin', groupId: g }, answer: { type: 'users', users: ['user1'] }, resolves: ['user1'] },
  { call: "connection.getGroupAllowlist({groupId: 'groupId'})", sends: { method: 'getGroupAllowlist', groupId: g }, answer: { type: 'users', users: [] }, resolves: [] },
  { call: "connection.getGroupBlocklist({groupId: 'groupId'})", sends: { method: 'getGroupBlocklist', groupId: g }, answer: { type: 'users', users: ['x'] }, resolves: ['x'] },
  {
    call: 'connection.getGroupInfo({groupId: groupId})',
    sends: { method: 'getGroupInfo', groupIds: [g] },
    answer: {
      type: 'groupInfos',
      groups: [
        {
          groupId: g,
          info: {
            id: g, name: 'n', description: 'd', owner: 'o', created: 1700000000000, affiliationsCount: 3, maxusers: 200,
            public: true, membersonly: false, allowinvites: true, inviteNeedConfirm: false, mute: false, custom: '{}', shieldgroup: false, role: 'owner',
          },
          error: null,
        },
      ],
    },
    resolves: [
      {
        id: g, name: 'n', description: 'd', owner: 'o', created: 1700000000000, affiliations_count: 3, maxusers: 200,
        public: true, membersonly: false, allowinvites: true, invite_need_confirm: false, mute: false, custom: '{}', shieldgroup: false, role: 'owner',
      },
    ],
  },
  {
    call: "connection.getGroupMemberAttributes({groupId: 'groupId', userId: 'userId'})",
    sends: { method: 'getGroupMemberAttributes', groupId: g, userId: 'userId' },
    answer: { type: 'attributes', attributes: { nickname: 'Al' } },
    resolves: { nickname: 'Al' },
  },
  {
    call: "connection.getGroupMembersAttributes({groupId: 'groupId', userIds: ['userId'], keys: ['avatar', 'nickname']})",
    sends: { method: 'getGroupMembersAttributes', groupId: g, userIds: ['userId'], keys: ['avatar', 'nickname'] },
    answer: { type: 'membersAttributes', members: { userId: { nickname: 'Al' } } },
    resolves: { userId: { nickname: 'Al' } },
  },
  {
    call: "connection.getGroupMsgReadUser({groupId: 'groupId', msgId: 'msgId'})",
    sends: { method: 'getGroupMsgReadUser', groupId: g, msgId: 'msgId', limit: 100, cursor: null },
    answer: { type: 'readUsers', total: 1, users: [{ userId: 'bob', readAt: 5 }], cursor: null },
    resolves: { total: 1, users: [{ user_id: 'bob', read_at: 5 }], cursor: null },
  },
  {
    call: "connection.getGroupMutelist({groupId: 'groupId'})",
    sends: { method: 'getGroupMutelist', groupId: g },
    answer: { type: 'mutes', mutes: [{ user: 'bob', expire: -1 }] },
    resolves: [{ user: 'bob', expire: -1 }],
  },
  {
    call: 'connection.getPublicGroups({limit: 20, cursor: null})',
    sends: { method: 'getPublicGroups', limit: 20, cursor: null },
    answer: { type: 'publicGroups', groups: [{ groupId: '7', groupName: 'seven' }], cursor: '7' },
    resolves: { data: [{ groupid: '7', groupname: 'seven' }], cursor: '7' },
  },
  {
    call: "connection.inviteUsersToGroup({groupId: 'groupId', users: ['user1', 'user2']})",
    sends: { method: 'inviteUsersToGroup', groupId: g, users: ['user1', 'user2'] },
    answer: { type: 'invited', pending: ['user1'], joined: ['user2'] },
    resolves: { pending: ['user1'], joined: ['user2'] },
  },
  {
    call: "connection.isInGroupAllowlist({groupId: 'groupId', userName: 'user1'})",
    sends: { method: 'isInGroupAllowlist', groupId: g, userName: 'user1' },
    answer: { type: 'bool', value: true },
    resolves: true,
  },
  {
    call: "connection.isInGroupMutelist({groupId: 'groupId'})",
    sends: { method: 'isInGroupMutelist', groupId: g },
    answer: { type: 'bool', value: false },
    resolves: false,
  },
  {
    call: "connection.joinGroup({groupId: 'groupId', message: 'I want to join the group'})",
    sends: { method: 'joinGroup', groupId: g, message: 'I want to join the group' },
    answer: { type: 'joinResult', joined: false },
    resolves: { joined: false },
  },
  { call: "connection.leaveGroup({groupId: 'groupId'})", sends: { method: 'leaveGroup', groupId: g } },
  {
    call: "connection.listGroupMembers({pageNum: 1, pageSize: 20, groupId: 'groupId'})",
    sends: { method: 'listGroupMembers', groupId: g, pageNum: 1, pageSize: 20 },
    answer: {
      type: 'members',
      members: [
        { userId: 'o', role: 'owner', joinedAt: 1 },
        { userId: 'a', role: 'admin', joinedAt: 2 },
        { userId: 'm', role: 'member', joinedAt: 3 },
      ],
    },
    resolves: [
      { owner: 'o', role: 'owner', joined_at: 1 },
      { member: 'a', role: 'admin', joined_at: 2 },
      { member: 'm', role: 'member', joined_at: 3 },
    ],
  },
  {
    call: "connection.modifyGroup({groupId: 'groupId', groupName: 'groupName', description:'description'})",
    sends: { method: 'modifyGroup', groupId: g, groupName: 'groupName', description: 'description', ext: null },
  },
  {
    call: "connection.muteGroupMember({username: 'user1' || ['user1', 'user2'], muteDuration: -1, groupId: 'groupId'})",
    sends: { method: 'muteGroupMember', groupId: g, username: ['user1'], muteDuration: -1 },
    answer: { type: 'mutes', mutes: [{ user: 'user1', expire: -1 }] },
    resolves: [{ user: 'user1', expire: -1 }],
  },
  { call: "connection.rejectGroupInvite({invitee: 'myUserId', groupId: 'groupId'})", sends: { method: 'rejectGroupInvite', groupId: g, invitee: 'myUserId' } },
  {
    call: "connection.rejectGroupJoinRequest({applicant: 'user1', groupId: 'groupId', reason: 'I do not like you'})",
    sends: { method: 'rejectGroupJoinRequest', groupId: g, applicant: 'user1', reason: 'I do not like you' },
  },
  { call: "connection.removeGroupAdmin({groupId: 'groupId', username: 'user1'})", sends: { method: 'removeGroupAdmin', groupId: g, username: 'user1' } },
  { call: "connection.removeGroupAllowlistMember({groupId: 'groupId', userName: 'user1'})", sends: { method: 'removeGroupAllowlistMember', groupId: g, userName: 'user1' } },
  { call: "connection.removeGroupMember({groupId: 'groupId', username: 'user1'})", sends: { method: 'removeGroupMember', groupId: g, username: 'user1' } },
  { call: "connection.removeGroupMembers({groupId: 'groupId', users: ['user1', 'user2']})", sends: { method: 'removeGroupMembers', groupId: g, users: ['user1', 'user2'] } },
  { call: "connection.setGroupAdmin({groupId: 'groupId', username: 'user1'})", sends: { method: 'setGroupAdmin', groupId: g, username: 'user1' } },
  {
    call: "connection.setGroupMemberAttributes({groupId: 'groupId', userId: 'userId', memberAttributes: {key: 'value'}})",
    sends: { method: 'setGroupMemberAttributes', groupId: g, userId: 'userId', memberAttributes: { key: 'value' } },
  },
  // The seed's example names no username: refused before sending, naming the option.
  { call: "connection.unblockGroupMember({groupId: 'groupId'})", sends: { refused: 'unblockGroupMember: username must be a string, got undefined' } },
  { call: "connection.unblockGroupMembers({groupId: 'groupId', usernames: ['user1', 'user2']})", sends: { method: 'unblockGroupMembers', groupId: g, usernames: ['user1', 'user2'] } },
  {
    call: "connection.unmuteGroupMember({groupId: 'groupId', username: 'user1' || ['user1', 'user2']})",
    sends: { method: 'unmuteGroupMember', groupId: g, username: ['user1'] },
  },
  { call: "connection.updateGroupAnnouncement({groupId: 'groupId', announcement: 'hello'})", sends: { method: 'updateGroupAnnouncement', groupId: g, announcement: 'hello' } },
];

/** The seed's 46 methods (the two file calls' examples run in files.test.ts). */
const SEED_METHODS = [
  'acceptGroupInvite', 'acceptGroupJoinRequest', 'addUsersToGroupAllowlist', 'blockGroupMember', 'blockGroupMembers',
  'blockGroupMessages', 'changeGroupOwner', 'createGroup', 'deleteGroupSharedFile', 'destroyGroup', 'disableSendGroupMsg',
  'downloadGroupSharedFile', 'enableSendGroupMsg', 'fetchGroupAnnouncement', 'getGroupAdmin', 'getGroupAllowlist',
  'getGroupBlocklist', 'getGroupInfo', 'getGroupMemberAttributes', 'getGroupMembersAttributes', 'getGroupMsgReadUser',
  'getGroupMutelist', 'getGroupSharedFilelist', 'getJoinedGroups', 'getPublicGroups', 'inviteUsersToGroup',
  'isInGroupAllowlist', 'isInGroupMutelist', 'joinGroup', 'leaveGroup', 'listGroupMembers', 'modifyGroup',
  'muteGroupMember', 'rejectGroupInvite', 'rejectGroupJoinRequest', 'removeGroupAdmin', 'removeGroupAllowlistMember',
  'removeGroupMember', 'removeGroupMembers', 'setGroupAdmin', 'setGroupMemberAttributes', 'unblockGroupMember',
  'unblockGroupMembers', 'unmuteGroupMember', 'updateGroupAnnouncement', 'uploadGroupSharedFile',
];
const PENDING: string[] = [];
const FILE_CALLS = ['downloadGroupSharedFile', 'uploadGroupSharedFile'];

describe('the seed document', () => {
  test('names 46 methods; the connection has every one', () => {
    assert.equal(SEED_METHODS.length, 46);
    for (const m of SEED_METHODS) {
      const has = typeof (Connection.prototype as unknown as Record<string, unknown>)[m] === 'function';
      assert.equal(has, !PENDING.includes(m), m);
    }
  });

  for (const ex of EXAMPLES) {
    test(`runs as written: ${ex.call.replace(/\s+/g, ' ')}`, async () => {
      const broker = new FakeBroker();
      broker.answer = () => ({ ok: true, value: ex.answer ?? { type: 'done' } });
      const connection = await Connection.open(broker.stream, { token: 't', deviceId: 'd' });
      // The call's own text, evaluated as a page would (`groupId` is a variable in one).
      const run = new Function('connection', 'groupId', `return ${ex.call};`) as (c: Connection, groupId: string) => Promise<unknown>;
      try {
        if ('refused' in ex.sends) {
          await assert.rejects(run(connection, g), (e: unknown) => {
            assert.ok(e instanceof ConvokeError && e.code === -3, String(e));
            assert.ok(e.message.includes((ex.sends as { refused: string }).refused), e.message);
            return true;
          });
          assert.equal(broker.requests.length, 0);
        } else {
          const result = await run(connection, g);
          assert.deepStrictEqual(broker.requests.map((r) => r.request), [ex.sends]);
          assert.deepStrictEqual(result, ex.resolves);
        }
      } finally {
        connection.close();
      }
    });
  }

  test('every seed method with an example is exercised', () => {
    const called = new Set(EXAMPLES.map((e) => /^connection\.(\w+)/.exec(e.call)![1]));
    // Methods the seed shows without an example line.
    const noExample = ['getGroupSharedFilelist', 'getJoinedGroups', ...FILE_CALLS];
    assert.deepEqual(
      SEED_METHODS.filter((m) => !called.has(m)).sort(),
      noExample.sort(),
    );
  });
});

describe('the seed methods without an example line', () => {
  test('getJoinedGroups pages from 0 with needAffiliations or needRole, from 1 without', async () => {
    const broker = new FakeBroker();
    broker.answer = () => ({
      ok: true,
      value: { type: 'joinedGroups', groups: [{ groupId: '1', groupName: 'one', affiliationsCount: 3, role: null }] },
    });
    const connection = await Connection.open(broker.stream, { token: 't', deviceId: 'd' });
    const got = await connection.getJoinedGroups({ needAffiliations: true });
    assert.deepEqual(got, [{ groupid: '1', groupname: 'one', affiliations_count: 3 }]);
    await connection.getJoinedGroups({ pageSize: 500 });
    assert.deepStrictEqual(broker.requests.map((r) => r.request), [
      { method: 'getJoinedGroups', pageNum: 0, pageSize: 20, needAffiliations: true, needRole: false },
      { method: 'getJoinedGroups', pageNum: 1, pageSize: 500, needAffiliations: false, needRole: false },
    ]);
    connection.close();
  });

  test('getGroupSharedFilelist resolves to the contract entries', async () => {
    const broker = new FakeBroker();
    broker.answer = () => ({
      ok: true,
      value: {
        type: 'files',
        files: [{ fileId: '5', fileName: 'a.txt', fileOwner: 'bob', fileSize: '10', created: 3, contentType: 'text/plain', sha256: 'ab', secret: 's' }],
      },
    });
    const connection = await Connection.open(broker.stream, { token: 't', deviceId: 'd' });
    const got = await connection.getGroupSharedFilelist({ groupId: '1', pageNum: 1, pageSize: 10 });
    assert.deepEqual(got, [
      { file_id: '5', file_name: 'a.txt', file_owner: 'bob', file_size: 10, created: 3, content_type: 'text/plain', sha256: 'ab', secret: 's' },
    ]);
    connection.close();
  });
});

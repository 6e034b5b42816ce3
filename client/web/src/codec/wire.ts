/**
 * The wire types of `protocol/src/` (request.rs, response.rs, event.rs, handshake.rs,
 * transfer.rs, error.rs) as schemas, in the Rust declaration order of fields and variants
 * (which is bincode's). The golden fixtures (client/web/test/fixtures/, written by
 * protocol/tests/web_fixtures.rs) check every variant byte for byte; a change on the Rust
 * side fails that test until the fixtures are regenerated and this file agrees.
 */

import {
  bool,
  bytes,
  enumOf,
  i64,
  type Infer,
  map,
  names,
  opt,
  result,
  string,
  struct,
  u32,
  u64,
  vec,
} from './schema.js';

/** ErrorCode, in its Rust variant order: the SDK's number and name (error.rs). */
export const ERROR_CODES = [
  [-3, 'REQUEST_PARAMETER_ERROR'],
  [28, 'TOKEN_NOT_ASSIGNED'],
  [50, 'MAX_LIMIT'],
  [101, 'UPLOAD_FILE_ERROR'],
  [200, 'DOWNLOAD_FILE_ERROR'],
  [204, 'USER_NOT_FOUND'],
  [500, 'SERVER_BUSY'],
  [506, 'SERVICE_NOT_ALLOW_MESSAGING'],
  [507, 'SERVICE_NOT_ALLOW_MESSAGING_MUTE'],
  [509, 'MESSAGE_CURRENT_LIMITING'],
  [511, 'MESSAGE_SIZE_LIMIT'],
  [601, 'GROUP_ALREADY_JOINED'],
  [602, 'GROUP_NOT_JOINED'],
  [603, 'PERMISSION_DENIED'],
  [605, 'GROUP_NOT_EXIST'],
  [606, 'GROUP_MEMBERS_FULL'],
  [607, 'GROUP_MEMBERS_LIMIT'],
  [609, 'GROUP_MEMBER_ATTRIBUTES_SET_FAILED'],
  [501, 'NOT_IMPLEMENTED'],
  [505, 'UNSUPPORTED_VERSION'],
  [1, 'INTERNAL'],
] as const;

/** The SDK's name of an error code (`605` -> `GROUP_NOT_EXIST`), or undefined. */
export function errorName(code: number): string | undefined {
  return ERROR_CODES.find(([c]) => c === code)?.[1];
}

const errorCode = { t: 'code', codes: ERROR_CODES } as const;

export const ApiErrorSchema = struct('ApiError', { code: errorCode, message: string });

export const RoleSchema = names('Role', ['owner', 'admin', 'member']);

/** The `onGroupEvent` operations, in GroupEventOp's variant order (event.rs). */
export const GROUP_EVENT_OPS = [
  'create',
  'destroy',
  'requestToJoin',
  'acceptRequest',
  'joinPublicGroupDeclined',
  'inviteToJoin',
  'acceptInvite',
  'rejectInvite',
  'directJoined',
  'memberPresence',
  'memberAbsence',
  'removeMember',
  'unblockMember',
  'updateInfo',
  'changeOwner',
  'setAdmin',
  'removeAdmin',
  'muteMember',
  'unmuteMember',
  'muteAllMembers',
  'unmuteAllMembers',
  'addUserToAllowlist',
  'removeAllowlistMember',
  'updateAnnouncement',
  'deleteAnnouncement',
  'uploadFile',
  'deleteFile',
  'memberAttributesUpdate',
] as const;

export const GroupEventOpSchema = names('GroupEventOp', GROUP_EVENT_OPS);

export const CreateGroupDataSchema = struct('CreateGroupData', {
  groupname: string,
  desc: string,
  members: vec(string),
  public: bool,
  approval: bool,
  allowinvites: bool,
  inviteNeedConfirm: bool,
  maxusers: opt(u32),
  ext: string,
});

const g = { groupId: string } as const;
const page = { groupId: string, limit: u32, cursor: opt(string) } as const;

/** One variant per method of the contract, tagged `method` with the seed's name. */
export const RequestSchema = enumOf('Request', 'method', {
  ping: { nonce: u64 },
  createGroup: { data: CreateGroupDataSchema },
  destroyGroup: g,
  getGroupInfo: { groupIds: vec(string) },
  modifyGroup: {
    groupId: string,
    groupName: opt(string),
    description: opt(string),
    ext: opt(string),
  },
  changeGroupOwner: { groupId: string, newOwner: string },
  listGroupMembers: { groupId: string, pageNum: u32, pageSize: u32 },
  getGroupAdmin: g,
  setGroupAdmin: { groupId: string, username: string },
  removeGroupAdmin: { groupId: string, username: string },
  inviteUsersToGroup: { groupId: string, users: vec(string) },
  acceptGroupInvite: { groupId: string, invitee: string },
  rejectGroupInvite: { groupId: string, invitee: string },
  joinGroup: { groupId: string, message: string },
  acceptGroupJoinRequest: { groupId: string, applicant: string },
  rejectGroupJoinRequest: { groupId: string, applicant: string, reason: string },
  leaveGroup: g,
  removeGroupMember: { groupId: string, username: string },
  removeGroupMembers: { groupId: string, users: vec(string) },
  muteGroupMember: { groupId: string, username: vec(string), muteDuration: i64 },
  unmuteGroupMember: { groupId: string, username: vec(string) },
  getGroupMutelist: g,
  isInGroupMutelist: g,
  disableSendGroupMsg: g,
  enableSendGroupMsg: g,
  blockGroupMember: { groupId: string, username: string },
  blockGroupMembers: { groupId: string, usernames: vec(string) },
  unblockGroupMember: { groupId: string, username: string },
  unblockGroupMembers: { groupId: string, usernames: vec(string) },
  getGroupBlocklist: g,
  addUsersToGroupAllowlist: { groupId: string, users: vec(string) },
  removeGroupAllowlistMember: { groupId: string, userName: string },
  getGroupAllowlist: g,
  isInGroupAllowlist: { groupId: string, userName: string },
  fetchGroupAnnouncement: g,
  updateGroupAnnouncement: { groupId: string, announcement: string },
  deleteGroupSharedFile: { groupId: string, fileId: string },
  getGroupSharedFilelist: { groupId: string, pageNum: u32, pageSize: u32 },
  setGroupMemberAttributes: { groupId: string, userId: string, memberAttributes: map(string) },
  getGroupMemberAttributes: { groupId: string, userId: string },
  getGroupMembersAttributes: { groupId: string, userIds: vec(string), keys: vec(string) },
  getJoinedGroups: { pageNum: u32, pageSize: u32, needAffiliations: bool, needRole: bool },
  getPublicGroups: { limit: u32, cursor: opt(string) },
  blockGroupMessages: g,
  unblockGroupMessages: g,
  getGroupMsgReadUser: { groupId: string, msgId: string, limit: u32, cursor: opt(string) },
  sendGroupMessage: {
    groupId: string,
    payload: bytes,
    allowGroupAck: bool,
    clientMsgId: opt(string),
  },
  ackGroupMessage: { groupId: string, msgId: string },
  getGroupMessages: { groupId: string, before: opt(u64), after: opt(u64), limit: u32 },
  getGroupMutelistPage: page,
  getGroupBlocklistPage: page,
  getGroupAllowlistPage: page,
});

export const GroupInfoSchema = struct('GroupInfo', {
  id: string,
  name: string,
  description: string,
  owner: string,
  created: i64,
  affiliationsCount: u32,
  maxusers: u32,
  public: bool,
  membersonly: bool,
  allowinvites: bool,
  inviteNeedConfirm: bool,
  mute: bool,
  custom: string,
  shieldgroup: bool,
  role: opt(RoleSchema),
});

export const GroupInfoEntrySchema = struct('GroupInfoEntry', {
  groupId: string,
  info: opt(GroupInfoSchema),
  error: opt(ApiErrorSchema),
});

export const MemberEntrySchema = struct('MemberEntry', {
  userId: string,
  role: RoleSchema,
  joinedAt: i64,
});

export const MuteEntrySchema = struct('MuteEntry', { user: string, expire: i64 });

export const SharedFileSchema = struct('SharedFile', {
  fileId: string,
  fileName: string,
  fileOwner: string,
  fileSize: u64,
  created: i64,
  contentType: string,
  sha256: string,
  secret: string,
});

export const JoinedGroupSchema = struct('JoinedGroup', {
  groupId: string,
  groupName: string,
  affiliationsCount: opt(u32),
  role: opt(RoleSchema),
});

export const PublicGroupSchema = struct('PublicGroup', { groupId: string, groupName: string });

export const ReadUserSchema = struct('ReadUser', { userId: string, readAt: i64 });

export const GroupMessageSchema = struct('GroupMessage', {
  groupId: string,
  msgId: string,
  seq: u64,
  from: string,
  payload: bytes,
  timestamp: i64,
  allowGroupAck: bool,
});

/** A successful answer, tagged `type`. */
export const ResponseSchema = enumOf('Response', 'type', {
  done: {},
  pong: { nonce: u64, serverTime: i64 },
  groupCreated: { groupId: string },
  groupInfos: { groups: vec(GroupInfoEntrySchema) },
  members: { members: vec(MemberEntrySchema) },
  users: { users: vec(string) },
  invited: { pending: vec(string), joined: vec(string) },
  joinResult: { joined: bool },
  mutes: { mutes: vec(MuteEntrySchema) },
  bool: { value: bool },
  announcement: { announcement: string },
  files: { files: vec(SharedFileSchema) },
  attributes: { attributes: map(string) },
  membersAttributes: { members: map(map(string)) },
  joinedGroups: { groups: vec(JoinedGroupSchema) },
  publicGroups: { groups: vec(PublicGroupSchema), cursor: opt(string) },
  readUsers: { total: u32, users: vec(ReadUserSchema), cursor: opt(string) },
  messageSent: { msgId: string, seq: u64, timestamp: i64 },
  messages: { messages: vec(GroupMessageSchema) },
  mutesPage: { mutes: vec(MuteEntrySchema), cursor: opt(string) },
  usersPage: { users: vec(string), cursor: opt(string) },
});

/** The operation-specific part of an event, tagged `kind`. */
export const EventDetailSchema = enumOf('EventDetail', 'kind', {
  none: {},
  text: { text: string },
  newOwner: { owner: string },
  mute: { expire: i64 },
  updated: { groupName: opt(string), description: opt(string), ext: opt(string) },
  announcement: { announcement: string },
  file: { file: SharedFileSchema },
  fileId: { fileId: string },
  attributes: { userId: string, attributes: map(string) },
});

export const GroupEventSchema = struct('GroupEvent', {
  operation: GroupEventOpSchema,
  groupId: string,
  groupName: string,
  from: string,
  users: vec(string),
  detail: EventDetailSchema,
  timestamp: i64,
});

/** A frame on the server's event stream, tagged `push`. */
export const PushSchema = enumOf('Push', 'push', {
  group: { event: GroupEventSchema },
  multiDevice: { event: GroupEventSchema },
  message: { message: GroupMessageSchema },
  closing: { code: u32, reason: string },
  kept: { id: u64, event: GroupEventSchema },
});

export const HelloSchema = struct('Hello', {
  versions: vec(u32),
  token: string,
  deviceId: string,
  events: bool,
});

export const WelcomeSchema = struct('Welcome', {
  version: u32,
  userId: string,
  appAdmin: bool,
  sessionId: u64,
  serverTime: i64,
});

/** What the client sends on the control stream, tagged `type`. */
export const ClientFrameSchema = enumOf('ClientFrame', 'type', {
  hello: { hello: HelloSchema },
  request: { id: u64, request: RequestSchema },
  ack: { ids: vec(u64) },
});

/** What the broker sends on the control stream, tagged `type`. */
export const ServerFrameSchema = enumOf('ServerFrame', 'type', {
  welcome: { welcome: WelcomeSchema },
  refused: { error: ApiErrorSchema },
  response: { id: u64, result: result(ResponseSchema, ApiErrorSchema) },
});

/** The first frame on a transfer stream, tagged `type`. */
export const TransferHeaderSchema = enumOf('TransferHeader', 'type', {
  upload: {
    groupId: string,
    fileName: string,
    size: u64,
    contentType: string,
    uploadId: u64,
    resume: bool,
  },
  download: { groupId: string, fileId: string, secret: opt(string), offset: u64 },
});

/** What the broker writes on a transfer stream, tagged `type`. */
export const TransferReplySchema = enumOf('TransferReply', 'type', {
  outcome: { result: result(SharedFileSchema, ApiErrorSchema) },
  resumeAt: { offset: u64 },
});

export type ApiError = Infer<typeof ApiErrorSchema>;
export type Role = Infer<typeof RoleSchema>;
export type GroupEventOp = Infer<typeof GroupEventOpSchema>;
export type CreateGroupData = Infer<typeof CreateGroupDataSchema>;
export type Request = Infer<typeof RequestSchema>;
export type GroupInfo = Infer<typeof GroupInfoSchema>;
export type GroupInfoEntry = Infer<typeof GroupInfoEntrySchema>;
export type MemberEntry = Infer<typeof MemberEntrySchema>;
export type MuteEntry = Infer<typeof MuteEntrySchema>;
export type SharedFile = Infer<typeof SharedFileSchema>;
export type JoinedGroup = Infer<typeof JoinedGroupSchema>;
export type PublicGroup = Infer<typeof PublicGroupSchema>;
export type ReadUser = Infer<typeof ReadUserSchema>;
export type GroupMessage = Infer<typeof GroupMessageSchema>;
export type Response = Infer<typeof ResponseSchema>;
export type EventDetail = Infer<typeof EventDetailSchema>;
export type GroupEvent = Infer<typeof GroupEventSchema>;
export type Push = Infer<typeof PushSchema>;
export type Hello = Infer<typeof HelloSchema>;
export type Welcome = Infer<typeof WelcomeSchema>;
export type ClientFrame = Infer<typeof ClientFrameSchema>;
export type ServerFrame = Infer<typeof ServerFrameSchema>;
export type TransferHeader = Infer<typeof TransferHeaderSchema>;
export type TransferReply = Infer<typeof TransferReplySchema>;

/** The request variant with method `M`, e.g. `RequestOf<'acceptGroupInvite'>`. */
export type RequestOf<M extends Request['method']> = Extract<Request, { method: M }>;
/** The response variant of type `T`, e.g. `ResponseOf<'groupCreated'>`. */
export type ResponseOf<T extends Response['type']> = Extract<Response, { type: T }>;

//! A script of requests from a small cast against the pure group rules
//! (`convoke_broker::group::rules`), with the clock moving and mute timers firing.
//!
//! After every step: a failed request changed nothing; the roster invariants hold (owner is
//! a member, admins are members, nobody both blocked and a member, counts match, ...); every
//! changed record is dirty (persisted by the driver); the file quota holds.
#![no_main]

use arbitrary::Arbitrary;
use convoke_broker::group::model::Group;
use convoke_broker::group::rules::{self, files::FileOp, Caller, Ctx};
use convoke_fuzz::{
    after_step, build_group, caller, check_roster, file_rec, small_file_limits, small_limits, step,
    World, T0,
};
use convoke_protocol::{CreateGroupData, Request, Role};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

/// The cast: index into this with a `U`. "ghost" never logged in; the last is not a valid id.
const CAST: [&str; 8] = ["owner", "adm", "m1", "m2", "out", "blk", "ghost", "bad id"];

#[derive(Debug, Clone, Copy, Arbitrary)]
struct U(u8);

impl U {
    fn name(self) -> String {
        CAST[self.0 as usize % CAST.len()].to_string()
    }
}

fn names(us: &[U]) -> Vec<String> {
    us.iter().take(8).map(|u| u.name()).collect()
}

/// Text of interesting lengths (multi-byte, to tell characters from bytes).
#[derive(Debug, Clone, Arbitrary)]
enum Txt {
    Empty,
    Short(u8),
    Long(u16),
    Any(String),
}

impl Txt {
    fn text(&self) -> String {
        match self {
            Txt::Empty => String::new(),
            Txt::Short(n) => "ab".repeat(*n as usize % 5 + 1),
            Txt::Long(n) => "é".repeat(*n as usize % 9000),
            Txt::Any(s) => s.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Key {
    Nick,
    Avatar,
    Long,
    Bad,
    Empty,
}

impl Key {
    fn text(self) -> String {
        match self {
            Key::Nick => "nick",
            Key::Avatar => "avatar",
            Key::Long => "k234567890123456",
            Key::Bad => "bad key",
            Key::Empty => "",
        }
        .to_string()
    }
}

#[derive(Debug, Clone, Arbitrary)]
enum Op {
    Destroy,
    Modify(Option<Txt>, Option<Txt>, Option<Txt>),
    ChangeOwner(U),
    List(u8, u16),
    GetAdmins,
    SetAdmin(U),
    RemoveAdmin(U),
    Invite(Vec<U>),
    AcceptInvite(U),
    RejectInvite(U),
    Join(Txt),
    AcceptRequest(U),
    RejectRequest(U, Txt),
    Leave,
    Remove(Vec<U>),
    RemoveOne(U),
    Block(Vec<U>),
    BlockOne(U),
    Unblock(Vec<U>),
    UnblockOne(U),
    GetBlocklist,
    Mute(Vec<U>, i8),
    Unmute(Vec<U>),
    GetMutelist,
    IsMuted,
    MuteAll(bool),
    AllowAdd(Vec<U>),
    AllowRemove(U),
    GetAllow,
    IsAllowed(U),
    FetchAnnouncement,
    UpdateAnnouncement(Txt),
    SetAttrs(U, Vec<(Key, Txt)>),
    GetAttrs(U),
    GetMembersAttrs(Vec<U>, Vec<Key>),
    Shield(bool),
    Info,
    Files(u8, u8),
    DeleteFile(u8),
    Admit(u8, u8),
    Release(u8),
    Record(u8, u8),
    Fetch(u8, bool),
    ExpireMutes,
}

#[derive(Debug, Clone, Arbitrary)]
struct Step {
    who: U,
    app_admin: bool,
    /// Clock advance, in 100 ms.
    dt: u8,
    op: Op,
}

#[derive(Debug, Clone, Arbitrary)]
struct Script {
    public: bool,
    approval: bool,
    allowinvites: bool,
    confirm: bool,
    /// maxusers is 5 + this % 4: the roster can fill.
    room: u8,
    /// Cast members (by bit) already at their group quota.
    at_quota: u8,
    steps: Vec<Step>,
}

fn request(gid: &str, op: &Op) -> Option<Request> {
    let group_id = gid.to_string();
    Some(match op {
        Op::Destroy => Request::DestroyGroup { group_id },
        Op::Modify(n, d, e) => Request::ModifyGroup {
            group_id,
            group_name: n.as_ref().map(Txt::text),
            description: d.as_ref().map(Txt::text),
            ext: e.as_ref().map(Txt::text),
        },
        Op::ChangeOwner(u) => Request::ChangeGroupOwner {
            group_id,
            new_owner: u.name(),
        },
        Op::List(page_num, page_size) => Request::ListGroupMembers {
            group_id,
            page_num: u32::from(*page_num),
            page_size: u32::from(*page_size),
        },
        Op::GetAdmins => Request::GetGroupAdmin { group_id },
        Op::SetAdmin(u) => Request::SetGroupAdmin {
            group_id,
            username: u.name(),
        },
        Op::RemoveAdmin(u) => Request::RemoveGroupAdmin {
            group_id,
            username: u.name(),
        },
        Op::Invite(us) => Request::InviteUsersToGroup {
            group_id,
            users: names(us),
        },
        Op::AcceptInvite(u) => Request::AcceptGroupInvite {
            group_id,
            invitee: u.name(),
        },
        Op::RejectInvite(u) => Request::RejectGroupInvite {
            group_id,
            invitee: u.name(),
        },
        Op::Join(t) => Request::JoinGroup {
            group_id,
            message: t.text(),
        },
        Op::AcceptRequest(u) => Request::AcceptGroupJoinRequest {
            group_id,
            applicant: u.name(),
        },
        Op::RejectRequest(u, t) => Request::RejectGroupJoinRequest {
            group_id,
            applicant: u.name(),
            reason: t.text(),
        },
        Op::Leave => Request::LeaveGroup { group_id },
        Op::Remove(us) => Request::RemoveGroupMembers {
            group_id,
            users: names(us),
        },
        Op::RemoveOne(u) => Request::RemoveGroupMember {
            group_id,
            username: u.name(),
        },
        Op::Block(us) => Request::BlockGroupMembers {
            group_id,
            usernames: names(us),
        },
        Op::BlockOne(u) => Request::BlockGroupMember {
            group_id,
            username: u.name(),
        },
        Op::Unblock(us) => Request::UnblockGroupMembers {
            group_id,
            usernames: names(us),
        },
        Op::UnblockOne(u) => Request::UnblockGroupMember {
            group_id,
            username: u.name(),
        },
        Op::GetBlocklist => Request::GetGroupBlocklist { group_id },
        Op::Mute(us, d) => Request::MuteGroupMember {
            group_id,
            username: names(us),
            // -1 forever, 0 and other negatives refused, else up to ~13 s.
            mute_duration: if *d < 0 {
                i64::from(*d)
            } else {
                i64::from(*d) * 100
            },
        },
        Op::Unmute(us) => Request::UnmuteGroupMember {
            group_id,
            username: names(us),
        },
        Op::GetMutelist => Request::GetGroupMutelist { group_id },
        Op::IsMuted => Request::IsInGroupMutelist { group_id },
        Op::MuteAll(true) => Request::DisableSendGroupMsg { group_id },
        Op::MuteAll(false) => Request::EnableSendGroupMsg { group_id },
        Op::AllowAdd(us) => Request::AddUsersToGroupAllowlist {
            group_id,
            users: names(us),
        },
        Op::AllowRemove(u) => Request::RemoveGroupAllowlistMember {
            group_id,
            user_name: u.name(),
        },
        Op::GetAllow => Request::GetGroupAllowlist { group_id },
        Op::IsAllowed(u) => Request::IsInGroupAllowlist {
            group_id,
            user_name: u.name(),
        },
        Op::FetchAnnouncement => Request::FetchGroupAnnouncement { group_id },
        Op::UpdateAnnouncement(t) => Request::UpdateGroupAnnouncement {
            group_id,
            announcement: t.text(),
        },
        Op::SetAttrs(u, kv) => Request::SetGroupMemberAttributes {
            group_id,
            user_id: u.name(),
            member_attributes: kv
                .iter()
                .take(8)
                .map(|(k, v)| (k.text(), v.text()))
                .collect(),
        },
        Op::GetAttrs(u) => Request::GetGroupMemberAttributes {
            group_id,
            user_id: u.name(),
        },
        Op::GetMembersAttrs(us, ks) => Request::GetGroupMembersAttributes {
            group_id,
            user_ids: names(us),
            keys: ks.iter().take(8).map(|k| k.text()).collect(),
        },
        Op::Shield(true) => Request::BlockGroupMessages { group_id },
        Op::Shield(false) => Request::UnblockGroupMessages { group_id },
        Op::Info => Request::GetGroupInfo {
            group_ids: vec![group_id],
        },
        Op::Files(page_num, page_size) => Request::GetGroupSharedFilelist {
            group_id,
            page_num: u32::from(*page_num),
            page_size: u32::from(*page_size),
        },
        Op::DeleteFile(id) => Request::DeleteGroupSharedFile {
            group_id,
            file_id: (id % 6).to_string(),
        },
        Op::Admit(..) | Op::Release(_) | Op::Record(..) | Op::Fetch(..) | Op::ExpireMutes => {
            return None
        }
    })
}

/// Whether an admin lifting the owner's block of an admin fails the target (see below).
const CHECK_UNBLOCK_OF_ADMINS: bool = true;

/// FUZZ_TRACE=1 prints each request (to read a crash or a corpus entry).
fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// The contract: admins may not remove, block, mute or demote admins or the owner, and so
/// may not undo what the owner did to an admin either (unmute, unblock). A successful request
/// by a plain admin leaves every other admin's and the owner's role and mute as they were,
/// and lifts no block the owner put on an admin.
fn admin_powers(
    before: &Group,
    after: &Group,
    who: &Caller,
    blocked_admins: &mut BTreeSet<String>,
    req: &Request,
) {
    let plain_admin = !who.app_admin && before.role(&who.user) == Some(Role::Admin);
    if plain_admin {
        let peers = before
            .admins
            .iter()
            .chain(std::iter::once(&before.meta.owner))
            .filter(|u| **u != who.user);
        for u in peers {
            assert_eq!(
                before.role(u),
                after.role(u),
                "admin {:?} changed the role of {u:?}: {req:?}",
                who.user
            );
            assert_eq!(
                before.mutes.get(u),
                after.mutes.get(u),
                "admin {:?} changed the mute of {u:?}: {req:?}",
                who.user
            );
        }
        // The block record remembers that its user was an admin (Group::blocked_admins);
        // before it did, this target found within seconds that any admin could unblock an
        // admin the owner blocked. Regression tests in tests/tests/authorization.rs.
        for u in blocked_admins.iter().filter(|_| CHECK_UNBLOCK_OF_ADMINS) {
            assert!(
                after.block.contains(u),
                "admin {:?} lifted the owner's block of admin {u:?}: {req:?}",
                who.user
            );
        }
    }
    for u in after.block.difference(&before.block) {
        if before.role(u) == Some(Role::Admin) {
            blocked_admins.insert(u.clone());
        }
    }
    blocked_admins.retain(|u| after.block.contains(u));
    // The group's own record of who was blocked as an admin agrees with the one kept here.
    assert_eq!(
        *blocked_admins, after.blocked_admins,
        "blocked admins differ after {req:?}"
    );
}

fuzz_target!(|script: Script| {
    let mut world = World::default();
    for u in &CAST[..6] {
        world.known.insert(u.to_string());
    }
    for (i, u) in CAST.iter().enumerate().take(6).skip(1) {
        if script.at_quota & (1 << i) != 0 {
            world.at_quota.insert(u.to_string());
        }
    }
    let limits = small_limits();
    let file_limits = small_file_limits();
    // The cast before any quota bites: the fixture's members join while under it.
    let setup_world = World {
        known: world.known.clone(),
        at_quota: Default::default(),
    };
    let data = CreateGroupData {
        groupname: "g".to_string(),
        members: ["adm", "m1", "m2", "blk"].map(String::from).to_vec(),
        public: script.public,
        approval: script.approval,
        allowinvites: script.allowinvites,
        invite_need_confirm: script.confirm,
        maxusers: Some(5 + u32::from(script.room % 4)),
        ..Default::default()
    };
    let gid = "1234";
    let setup = [
        Request::SetGroupAdmin {
            group_id: gid.into(),
            username: "adm".into(),
        },
        Request::SetGroupAdmin {
            group_id: gid.into(),
            username: "m1".into(),
        },
        // "blk" is blocked as an admin, and admin "m1" is muted by the owner: states whose
        // undoing by another admin the contract forbids.
        Request::SetGroupAdmin {
            group_id: gid.into(),
            username: "blk".into(),
        },
        Request::BlockGroupMember {
            group_id: gid.into(),
            username: "blk".into(),
        },
        Request::MuteGroupMember {
            group_id: gid.into(),
            username: vec!["m1".into()],
            mute_duration: -1,
        },
    ];
    let mut g = build_group(data, "owner", &setup, &setup_world, &limits);
    let mut now = T0;
    // Users the owner (or an app admin) blocked while they were admins.
    let mut blocked_admins = BTreeSet::from(["blk".to_string()]);
    let facts = world.facts();
    for s in script.steps.iter().take(64) {
        now += i64::from(s.dt) * 100;
        let ctx = Ctx {
            now,
            limits: &limits,
            facts: &facts,
        };
        // Callers are logged in: the first six of the cast.
        let who = caller(CAST[s.who.0 as usize % 6], s.app_admin);
        if let Some(req) = request(&g.id_str, &s.op) {
            let before = g.clone();
            if trace() {
                eprintln!("{who:?} {req:?}");
            }
            if step(&mut g, &who, &req, &ctx) {
                return;
            }
            admin_powers(&before, &g, &who, &mut blocked_admins, &req);
        } else if let Op::ExpireMutes = s.op {
            let before = g.clone();
            if let Some(fx) = rules::expire_mutes(&mut g, now) {
                after_step(&before, &g, Ok(&fx), &limits, &"expire_mutes");
                assert!(
                    g.mutes.values().all(|&e| e == -1 || e > now),
                    "an expired mute survived expire_mutes"
                );
            } else {
                assert!(
                    before == g,
                    "expire_mutes changed the group but reported nothing"
                );
            }
        } else {
            let op = match s.op {
                Op::Admit(id, size) => FileOp::Admit {
                    file_id: u64::from(id % 6),
                    size: u64::from(size),
                },
                Op::Release(id) => FileOp::Release {
                    file_id: u64::from(id % 6),
                },
                // File ids come from a node-wide counter: never one already recorded.
                Op::Record(id, _) if g.files.contains_key(&u64::from(id % 6)) => continue,
                Op::Record(id, size) => FileOp::Record {
                    file_id: u64::from(id % 6),
                    rec: file_rec(&who.user, u64::from(size), now),
                },
                Op::Fetch(id, with_secret) => FileOp::Fetch {
                    file_id: (id % 6).to_string(),
                    secret: with_secret.then(|| "ab".repeat(16)),
                },
                _ => unreachable!("requests and timers handled above"),
            };
            let before = g.clone();
            let record_id = match &op {
                FileOp::Record { file_id, .. } => Some(*file_id),
                _ => None,
            };
            let result = rules::files::apply_op(&mut g, &who, op.clone(), &file_limits, now);
            match &result {
                Err(e) => {
                    // A failed record still ends the upload's hold on the quota.
                    let mut expected = before.clone();
                    if let Some(id) = record_id {
                        expected.uploading.remove(&id);
                    }
                    assert!(expected == g, "failed {op:?} -> {e:?} changed the group");
                    convoke_fuzz::check_error(e, &op);
                }
                Ok((_, fx)) => {
                    check_roster(&g, &limits);
                    if let Some(fx) = fx {
                        convoke_fuzz::check_dirty(&before, &g, fx);
                    } else {
                        assert!(
                            before.files == g.files,
                            "{op:?} changed files without effects"
                        );
                    }
                }
            }
        }
        assert!(
            g.files.len() + g.uploading.len() <= file_limits.max_files_per_group,
            "{} files and {} uploads above the quota",
            g.files.len(),
            g.uploading.len()
        );
    }
});

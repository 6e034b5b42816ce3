//! Any bytes as a request body (every `Request` variant is reachable; the seed corpus holds
//! one encoding of each, `Request::examples()`), then, when it decodes, the request applied
//! by each role to a populated group.
//!
//! Checks: decoding never panics and a decoded request re-encodes to a body that decodes to
//! the same request; `method()` and `group_id()` answer; applying it as owner, admin,
//! member, outsider, blocked user or app admin never panics, a failure changes nothing, a
//! success keeps the roster invariants and marks every changed record dirty. createGroup
//! goes through `rules::create` the same way.
#![no_main]

use convoke_broker::group::model::Group;
use convoke_broker::group::rules::{self, Ctx};
use convoke_fuzz::{build_group, caller, check_dirty, check_roster, small_limits, step, World, T0};
use convoke_protocol::codec::{decode_body, frame_bytes, HEADER_LEN};
use convoke_protocol::{CreateGroupData, Request};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The cast uses the names of `Request::examples()`, so that the seeds hit real members.
/// Owner "owner", admin "user1", members "a" and "me", outsider "b", blocked "user2",
/// app admin "root"; "ghost" never logged in.
fn fixture() -> &'static (World, Group) {
    static FIXTURE: OnceLock<(World, Group)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut world = World::default();
        for u in ["owner", "user1", "user2", "a", "b", "me", "root", "x"] {
            world.known.insert(u.to_string());
        }
        let limits = small_limits();
        let gid = || "1234567".to_string();
        let s = |v: &str| v.to_string();
        let data = CreateGroupData {
            groupname: s("g"),
            members: vec![s("user1"), s("user2"), s("a"), s("me")],
            public: true,
            approval: true,
            maxusers: Some(20),
            ..Default::default()
        };
        let setup = [
            Request::SetGroupAdmin {
                group_id: gid(),
                username: s("user1"),
            },
            Request::BlockGroupMember {
                group_id: gid(),
                username: s("user2"),
            },
            Request::MuteGroupMember {
                group_id: gid(),
                username: vec![s("me")],
                mute_duration: 60_000,
            },
            Request::AddUsersToGroupAllowlist {
                group_id: gid(),
                users: vec![s("a")],
            },
            Request::InviteUsersToGroup {
                group_id: gid(),
                users: vec![s("x")],
            },
        ];
        let g = build_group(data, "owner", &setup, &world, &limits);
        (world, g)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode_body::<Request>(data) else {
        return;
    };
    let again = frame_bytes(&req).expect("a decoded request re-encodes");
    let back: Request = decode_body(&again[HEADER_LEN..]).expect("a re-encoded request decodes");
    assert_eq!(back, req, "encode/decode round trip changed the request");
    let _ = (req.method(), req.group_id());

    let (world, group) = fixture();
    let limits = small_limits();
    let facts = world.facts();
    let ctx = Ctx {
        now: T0 + 1_000,
        limits: &limits,
        facts: &facts,
    };
    let callers = [
        caller("owner", false),
        caller("user1", false),
        caller("a", false),
        caller("b", false),
        caller("user2", false),
        caller("root", true),
    ];
    for who in &callers {
        if let Request::CreateGroup { data } = &req {
            if let Ok((g, fx)) = rules::create(99, who, data, &ctx) {
                check_roster(&g, &limits);
                check_dirty(&Group::new(99, g.meta.clone()), &g, &fx);
            }
            continue;
        }
        let mut g = group.clone();
        step(&mut g, who, &req, &ctx);
    }
});

//! A 10,000-member group: loading its actor state from sled, one mutation (rule + durable
//! write), and the send-permission check.

#![allow(clippy::unwrap_used, reason = "benchmark setup")]

use convoke_broker::group::model::{Group, GroupMeta, MemberRec};
use convoke_broker::group::persist::GroupStore;
use convoke_broker::group::rules::{self, messages, Caller, Ctx, Dirty, Facts, Limits};
use convoke_broker::store::{Store, WriteSet};
use convoke_protocol::{Request, Role};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const MEMBERS: usize = 10_000;
const GID: u64 = 7;

fn big_group() -> Group {
    let meta = GroupMeta {
        name: "big".into(),
        description: String::new(),
        owner: "owner".into(),
        created: 1,
        maxusers: 100_000,
        public: true,
        membersonly: false,
        allowinvites: false,
        invite_need_confirm: true,
        mute_all: false,
        ext: String::new(),
        announcement: String::new(),
        member_count: 0,
    };
    let mut g = Group::new(GID, meta);
    g.insert_member("owner", MemberRec::new(Role::Owner, 1));
    for i in 1..MEMBERS {
        g.insert_member(
            &format!("user{i:05}"),
            MemberRec::new(Role::Member, 1 + i as i64),
        );
    }
    g
}

fn group(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), 64 * 1024 * 1024).unwrap();
    let mut g = big_group();
    let mut ws = WriteSet::default();
    let mut dirty = vec![Dirty::Meta];
    dirty.extend(g.members.keys().map(|u| Dirty::Member(u.clone())));
    store.group_writes(&g, &dirty, &mut ws);
    rt.block_on(store.commit(ws)).unwrap();

    c.bench_function("load a 10,000-member group from sled", |b| {
        b.iter(|| black_box(store.load_group(GID).unwrap().unwrap()))
    });

    let limits = Limits::default();
    // The benched requests name no user outside the group: no facts (as the ingress).
    let facts = Facts::default();
    let owner = Caller {
        user: "owner".into(),
        app_admin: false,
        session_id: 1,
    };
    let mut n = 0u64;
    c.bench_function("one mutation in a 10,000-member group (rule only)", |b| {
        b.iter(|| {
            n += 1;
            let req = Request::UpdateGroupAnnouncement {
                group_id: GID.to_string(),
                announcement: format!("a{n}"),
            };
            let ctx = Ctx {
                now: 1,
                limits: &limits,
                facts: &facts,
            };
            black_box(rules::apply(&mut g, &owner, &req, &ctx).unwrap());
        })
    });
    c.bench_function(
        "one mutation in a 10,000-member group (rule + durable write)",
        |b| {
            b.iter(|| {
                n += 1;
                let req = Request::MuteGroupMember {
                    group_id: GID.to_string(),
                    username: vec!["user00042".into()],
                    mute_duration: 60_000 + n as i64,
                };
                let ctx = Ctx {
                    now: 1,
                    limits: &limits,
                    facts: &facts,
                };
                let fx = rules::apply(&mut g, &owner, &req, &ctx).unwrap();
                let mut ws = WriteSet::default();
                store.group_writes(&g, &fx.dirty, &mut ws);
                rt.block_on(store.commit(ws)).unwrap();
            })
        },
    );
    let member = Caller {
        user: "user05000".into(),
        app_admin: false,
        session_id: 2,
    };
    c.bench_function("send-permission check", |b| {
        b.iter(|| messages::check_send(black_box(&g), black_box(&member), 64, 65_536, 1).unwrap())
    });
    c.bench_function("receivers of a 10,000-member group", |b| {
        b.iter(|| black_box(messages::receivers(&g)))
    });
}

criterion_group!(benches, group);
criterion_main!(benches);

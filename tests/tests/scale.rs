//! A 100,000-member group: the store is seeded directly (100,000 logins over QUIC would take
//! minutes), then the real broker serves it: member pages, admin lists, limits and fan-out.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_broker::group::model::{Group, GroupMeta, MemberRec};
use convoke_broker::group::persist::GroupStore;
use convoke_broker::group::rules::Dirty;
use convoke_broker::store::{Store, WriteSet};
use convoke_protocol::{ErrorCode, GroupEventOp as Op, Role};
use convoke_tests::{assert_code, Broker};
use std::collections::HashSet;

const MEMBERS: usize = 100_000;
const ADMINS: usize = 99;
const GID: u64 = 1_000_000_000;

fn user(i: usize) -> String {
    format!("u{i:06}")
}

async fn seed(data_dir: &std::path::Path) {
    let store = Store::open(&data_dir.join("db"), 64 * 1024 * 1024).unwrap();
    let meta = GroupMeta {
        name: "stadium".into(),
        description: "live event".into(),
        owner: user(0),
        created: 1,
        maxusers: MEMBERS as u32,
        public: true,
        membersonly: false,
        allowinvites: false,
        invite_need_confirm: false,
        mute_all: false,
        ext: String::new(),
        announcement: String::new(),
        member_count: 0,
    };
    let mut g = Group::new(GID, meta);
    let mut ws = WriteSet::default();
    let mut dirty = vec![Dirty::Meta];
    for i in 0..MEMBERS {
        let role = match i {
            0 => Role::Owner,
            i if i <= ADMINS => Role::Admin,
            _ => Role::Member,
        };
        g.insert_member(&user(i), MemberRec::new(role, 10 + i as i64));
        dirty.push(Dirty::Member(user(i)));
        store.user_writes(&mut ws, &user(i), 1);
    }
    store.user_writes(&mut ws, "latecomer", 1);
    store.group_writes(&g, &dirty, &mut ws);
    store.commit(ws).await.unwrap();
    store.close();
}

#[tokio::test]
async fn a_100k_member_group_lists_limits_and_fans_out() {
    let mut broker = Broker::unstarted(&[]);
    seed(&broker.data_dir()).await;
    broker.launch();

    let owner = broker.connect(&user(0)).await;
    let info = owner
        .client
        .get_group_info(&[&GID.to_string()])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    assert_eq!(info.affiliations_count as usize, MEMBERS);
    let gid = GID.to_string();

    // Every member exactly once across 100 pages of 1000, owner first.
    let mut seen = HashSet::with_capacity(MEMBERS);
    for page in 1..=100u32 {
        let members = owner
            .client
            .list_group_members(&gid, page, 1000)
            .await
            .unwrap();
        assert_eq!(members.len(), 1000, "page {page}");
        if page == 1 {
            assert_eq!(
                (members[0].user_id.as_str(), members[0].role),
                (user(0).as_str(), Role::Owner)
            );
        }
        for m in members {
            assert!(seen.insert(m.user_id), "listed twice");
        }
    }
    assert_eq!(seen.len(), MEMBERS);
    assert!(owner
        .client
        .list_group_members(&gid, 101, 1000)
        .await
        .unwrap()
        .is_empty());

    // 99 admins: the list is complete and the limit holds.
    let admins = owner.client.get_group_admin(&gid).await.unwrap();
    assert_eq!(admins.len(), ADMINS);
    assert_code(
        owner.client.set_group_admin(&gid, &user(500)).await,
        ErrorCode::MaxLimit,
    );
    // Full at maxusers.
    let late = broker.connect("latecomer").await;
    assert_code(
        late.client.join_group(&gid, "").await,
        ErrorCode::GroupMembersFull,
    );

    // Fan-out reaches the online members among the 100,000, and only them.
    let mut online = Vec::new();
    for i in [1usize, 5_000, 50_000, 99_999] {
        online.push(broker.connect(&user(i)).await);
    }
    let mut late = late;
    owner
        .client
        .send_group_message(&gid, b"kick-off".to_vec(), false)
        .await
        .unwrap();
    for p in &mut online {
        assert_eq!(p.expect_message().await.payload, b"kick-off");
    }
    late.expect_quiet().await;
    owner
        .client
        .update_group_announcement(&gid, "half time")
        .await
        .unwrap();
    for p in &mut online {
        p.expect(Op::UpdateAnnouncement).await;
    }
    // A mutation in the big group is persisted like any other.
    owner
        .client
        .remove_group_member(&gid, &user(99_999))
        .await
        .unwrap();
    online[3].expect(Op::RemoveMember).await;
    broker.restart();
    let owner = broker.connect(&user(0)).await;
    let info = owner
        .client
        .get_group_info(&[&gid])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    assert_eq!(info.affiliations_count as usize, MEMBERS - 1);
}

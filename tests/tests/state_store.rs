//! The state store end to end: a master in this process (a raft group of one), its
//! real `StateStore` gRPC service, and the SDK's client and leader election over TCP.
//!
//! - Batches: an app record and its instance records in one write, at one version;
//!   a stale compare-and-set applies nothing and is named; thousands of records in a
//!   few writes (by hand, or split by `write_all`, the last write of a key winning);
//!   a malformed batch is refused with the field that is wrong.
//! - Fences: a leader's fenced writes apply while it holds its lease, and are refused
//!   once another instance took the lease over.

use std::time::Duration;

use agora_master::{Master, MasterConfig, MasterHandle};
use agora_sdk::{BatchOp, BatchOutcome, Fence, LeaderElection, StateStore, StateStoreError};
use agora_tests::{logger, within};

/// A master alone, leading, and a client for `namespace` on it.
async fn start(namespace: &str) -> (MasterHandle, tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the master");
    let config = MasterConfig::new(dir.path().join("master"), logger());
    let master = Master::start(config, listener)
        .await
        .expect("the master starts");
    within("the master to lead", master.until_leading()).await;
    let store = StateStore::connect(vec![master.local_addr().to_string()], namespace)
        .expect("a store client");
    (master, dir, store)
}

fn applied(outcome: BatchOutcome) -> Vec<Option<agora_sdk::Entry>> {
    match outcome {
        BatchOutcome::Applied(entries) => entries,
        conflict => panic!("the batch did not apply: {conflict:?}"),
    }
}

#[tokio::test]
async fn a_batch_writes_an_app_and_its_instances_at_one_version_or_nothing() {
    let (master, _dir, store) = start("apps").await;

    let mut ops = vec![BatchOp::put("app/web", b"{\"instances\":10}".to_vec())];
    ops.extend((0..10).map(|i| BatchOp::put(format!("instance/web.{i}"), format!("record {i}"))));
    let entries = applied(store.batch(ops).await.expect("a batch"));
    assert_eq!(entries.len(), 11);
    let app = entries[0].clone().expect("the app's entry");
    assert_eq!(app.value, b"{\"instances\":10}");
    assert!(
        entries
            .iter()
            .all(|e| e.as_ref().is_some_and(|e| e.version == app.version)),
        "one write, one version: {entries:?}"
    );
    let instances = store.list("instance/").await.expect("a list");
    assert_eq!(instances.len(), 10);
    assert_eq!(instances[3].value, b"record 3");
    assert!(instances.iter().all(|e| e.version == app.version));

    // One stale compare-and-set: nothing applies, and the conflict names the key.
    let stale = store
        .batch([
            BatchOp::delete("instance/web.0"),
            BatchOp::put("instance/web.10", b"record 10".to_vec()),
            BatchOp::compare_and_set("app/web", app.version - 1, b"{}".to_vec()),
        ])
        .await
        .expect("a batch");
    assert_eq!(
        stale,
        BatchOutcome::Conflict {
            key: "app/web".into(),
            current: Some(app.clone()),
        }
    );
    assert!(store.get("instance/web.0").await.unwrap().is_some());
    assert_eq!(store.get("instance/web.10").await.unwrap(), None);
    // "Must not exist" on a key that exists conflicts too.
    let exists = store
        .batch([BatchOp::compare_and_set("app/web", 0, b"{}".to_vec())])
        .await
        .expect("a batch");
    assert!(matches!(exists, BatchOutcome::Conflict { ref key, .. } if key == "app/web"));

    // With the current version the app and its instances go in one write.
    let mut removal = vec![BatchOp::compare_and_delete("app/web", app.version)];
    removal.extend(instances.iter().map(|e| BatchOp::delete(e.key.clone())));
    let entries = applied(store.batch(removal).await.expect("a batch"));
    assert!(entries.iter().all(Option::is_none));
    assert_eq!(store.list("").await.unwrap(), Vec::new());

    master.shutdown().await;
}

#[tokio::test]
async fn thousands_of_records_take_a_few_batches() {
    let (master, _dir, store) = start("apps").await;
    let max = agora_core::limits::MAX_STORE_BATCH_OPS;
    for chunk in 0..5 {
        let ops = (0..max).map(|i| {
            let n = chunk * max + i;
            BatchOp::put(format!("instance/{n:05}"), vec![b'x'; 200])
        });
        assert_eq!(applied(store.batch(ops).await.expect("a batch")).len(), max);
    }
    let all = store.list("instance/").await.expect("a list");
    assert_eq!(all.len(), 5 * max);
    assert_eq!(all[4321].key, "instance/04321");
    master.shutdown().await;
}

#[tokio::test]
async fn write_all_splits_many_writes_into_batches_and_the_last_write_of_a_key_wins() {
    let (master, _dir, store) = start("cron").await;
    let max = agora_core::limits::MAX_STORE_BATCH_OPS;
    store
        .put("old/0", b"x".to_vec())
        .await
        .expect("a first key");
    // 2.5 batches' worth, with a key written first and last, and one put then
    // deleted: were they split as given, the batches (sent at once) could apply the
    // two writes of a key in either order.
    let mut ops = vec![BatchOp::put("run/00000", b"first".to_vec())];
    ops.extend((0..max * 5 / 2).map(|n| BatchOp::put(format!("run/{n:05}"), b"x".to_vec())));
    ops.push(BatchOp::put("run/00000", b"last".to_vec()));
    ops.push(BatchOp::delete("run/00001"));
    ops.push(BatchOp::delete("old/0"));
    store.write_all(ops).await.expect("every write applied");
    let runs = store.list("run/").await.expect("a list");
    assert_eq!(runs.len(), max * 5 / 2 - 1);
    assert_eq!(runs[0].value, b"last");
    assert_eq!(runs[1].key, "run/00002");
    assert_eq!(store.list("old/").await.unwrap(), Vec::new());
    // Conditional writes belong in one batch, not in write_all.
    let refused = store
        .write_all([BatchOp::compare_and_set("run/00000", 1, b"y".to_vec())])
        .await
        .expect_err("a conditional write");
    assert!(
        matches!(refused, StateStoreError::Invalid(_)),
        "{refused:?}"
    );
    master.shutdown().await;
}

#[tokio::test]
async fn the_master_refuses_a_malformed_batch_and_names_the_field() {
    let (master, _dir, store) = start("apps").await;
    let cases = [
        (Vec::new(), "batch.ops:"),
        (
            vec![
                BatchOp::put("a", b"1".to_vec()),
                BatchOp::put("a", b"2".to_vec()),
            ],
            "batch.ops[1].put.key:",
        ),
        (
            vec![
                BatchOp::put("a", b"1".to_vec()),
                BatchOp::put("b", b"2".to_vec()),
                BatchOp::delete("k".repeat(agora_core::limits::MAX_STORE_KEY_LEN + 1)),
            ],
            "batch.ops[2].delete.key:",
        ),
    ];
    for (ops, field) in cases {
        let error = store.batch(ops).await.expect_err("a malformed batch");
        assert!(
            matches!(&error, StateStoreError::Invalid(message) if message.starts_with(field)),
            "{field}: {error:?}"
        );
    }
    assert_eq!(store.list("").await.unwrap(), Vec::new(), "nothing written");
    master.shutdown().await;
}

#[tokio::test]
async fn a_deposed_leaders_fenced_writes_are_refused() {
    let (master, _dir, store) = start("apps").await;
    let ttl = Duration::from_secs(3);
    let a = LeaderElection::campaign(store.clone(), "leader", "a", ttl);
    within("a to lead", a.leadership().wait_for(|leading| *leading))
        .await
        .expect("a campaigns");
    let a_fence = a.fence().expect("a leads");
    let lease = store.lease("leader").await.unwrap().expect("a holds it");
    assert_eq!(a_fence, Fence::new("leader", "a", lease.epoch));
    let a_writes = store.fenced(a_fence.clone());
    applied(
        a_writes
            .batch([BatchOp::put("owner", b"a".to_vec())])
            .await
            .expect("a leads"),
    );

    // Another epoch of the same lease and holder is not this leadership.
    let wrong_epoch = store.fenced(Fence::new("leader", "a", a_fence.epoch + 1));
    let error = wrong_epoch.put("owner", b"?".to_vec()).await.unwrap_err();
    assert!(
        matches!(&error, StateStoreError::Fenced { current: Some(l), .. } if l.holder == "a"),
        "{error:?}"
    );

    a.resign().await.expect("a resigns");
    let b = LeaderElection::campaign(store.clone(), "leader", "b", ttl);
    within("b to lead", b.leadership().wait_for(|leading| *leading))
        .await
        .expect("b campaigns");
    let b_fence = b.fence().expect("b leads");
    assert!(b_fence.epoch > a_fence.epoch);

    // a's late writes, of every kind, are refused and say who leads now.
    let owner = store.get("owner").await.unwrap().expect("a wrote it");
    for error in [
        a_writes
            .put("owner", b"a again".to_vec())
            .await
            .unwrap_err(),
        a_writes.delete("owner").await.unwrap_err(),
        a_writes
            .compare_and_set("owner", owner.version, b"a again".to_vec())
            .await
            .unwrap_err(),
        a_writes
            .batch([BatchOp::put("other", b"a".to_vec())])
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(&error, StateStoreError::Fenced { fence, current: Some(l) }
                if *fence == a_fence && l.holder == "b" && l.epoch == b_fence.epoch),
            "{error:?}"
        );
    }
    assert_eq!(store.get("owner").await.unwrap(), Some(owner));
    assert_eq!(store.get("other").await.unwrap(), None);

    store
        .fenced(b_fence)
        .put("owner", b"b".to_vec())
        .await
        .expect("b leads");
    assert_eq!(store.get("owner").await.unwrap().unwrap().value, b"b");
    b.resign().await.expect("b resigns");
    master.shutdown().await;
}

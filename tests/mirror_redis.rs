//! The Redis mirror against a real redis-server: exact equality with the Raft state after a mixed
//! load through every member, an outage during the load, a leader killed while the mirror is
//! behind, unreachable mirrors at start, and keys of another type.

mod common;
mod mirror_common;

use std::time::{Duration, Instant};

use common::eventually;
use gridraft::mirror::hub::RunState;
use gridraft::mirror::{MirrorKind, MirrorMode};
use mirror_common::load::{
    assert_matches_model, load_during_outage, load_through_every_member, mixed_load,
    wait_mirror_down, Model,
};
use mirror_common::servers::OwnRedis;
use mirror_common::stores::{fresh_redis_db, redis_con, wait_caught_up, wait_keys_equal};
use mirror_common::{assert_still_serving, failed_mirror, mirror, mirrored};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_mirror_equals_the_raft_state_after_a_mixed_load_through_every_member() {
    if common::deps::redis().is_none() {
        return;
    }
    let url = fresh_redis_db(1).await;
    let c = mirrored(3, vec![mirror(MirrorKind::Redis, &url)]).await;
    tracing::info!("phase: mixed load through members 1, 2 and 3");
    let truth = load_through_every_member(&c).await;
    tracing::info!(
        sessions = truth.len(),
        "phase: the mirror equals the Raft state, key by key"
    );
    wait_keys_equal(&url, &truth, Duration::from_secs(60)).await;
    let leader = c.leader().await;
    wait_caught_up(&c, leader, MirrorKind::Redis).await;
    let metrics = c.metrics_text(leader).await;
    for line in [
        "gridraft_mirror_up{mirror=\"redis\"} 1",
        "gridraft_mirror_lag_entries{mirror=\"redis\"} ",
        "gridraft_mirror_lag_seconds{mirror=\"redis\"} ",
    ] {
        assert!(
            metrics.contains(line),
            "{line} missing from /metrics:\n{metrics}"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_during_the_load_then_restarted_converges_without_losing_or_resurrecting() {
    if common::deps::redis().is_none() {
        return;
    }
    let mut redis = OwnRedis::start().await;
    let c = mirrored(3, vec![mirror(MirrorKind::Redis, &redis.url())]).await;
    let mut model = Model::new();
    tracing::info!("phase: load with redis up");
    mixed_load(&c, &[vec![1], vec![2], vec![3]], 60, 0, &mut model).await;
    wait_keys_equal(&redis.url(), &c.truth().await, Duration::from_secs(60)).await;

    tracing::info!("phase: redis killed; the Grid keeps answering, quickly");
    redis.stop();
    load_during_outage(&c, &mut model).await;
    let leader = wait_mirror_down(&c, "redis", false).await;

    tracing::info!("phase: redis back; the mirror converges");
    redis.restart().await;
    let truth = c.truth().await;
    assert_matches_model(&truth, &model);
    wait_keys_equal(&redis.url(), &truth, Duration::from_secs(60)).await;
    wait_caught_up(&c, leader, MirrorKind::Redis).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_while_the_mirror_is_behind_the_new_leader_completes_it() {
    if common::deps::redis().is_none() {
        return;
    }
    let mut redis = OwnRedis::start().await;
    let mut c = mirrored(3, vec![mirror(MirrorKind::Redis, &redis.url())]).await;
    let mut model = Model::new();
    tracing::info!("phase: load with redis up, mirrored and progress replicated");
    mixed_load(&c, &[vec![1], vec![2], vec![3]], 40, 0, &mut model).await;
    wait_keys_equal(&redis.url(), &c.truth().await, Duration::from_secs(60)).await;
    let old = c.leader().await;
    wait_caught_up(&c, old, MirrorKind::Redis).await;

    tracing::info!("phase: redis down, more load: the mirror falls behind");
    redis.stop();
    mixed_load(&c, &[vec![1, 2], vec![2, 3], vec![3, 1]], 40, 1, &mut model).await;
    let behind = c.status(old).await;
    assert!(
        behind["mirrors"]["redis"]["lag_entries"].as_u64() > Some(0),
        "{behind}"
    );
    let progress = behind["mirrors"]["redis"]["replicated_progress"]
        .as_u64()
        .unwrap();

    tracing::info!(
        old,
        progress,
        "phase: the leader is killed while the mirror is behind"
    );
    c.kill(old).await;
    redis.restart().await;
    let new = c.leader().await;
    assert_ne!(new, old);
    let truth = c.truth().await;
    assert_matches_model(&truth, &model);
    wait_keys_equal(&redis.url(), &truth, Duration::from_secs(60)).await;
    wait_caught_up(&c, new, MirrorKind::Redis).await;
    let status = eventually(
        Duration::from_secs(30),
        "the new leader to replicate its progress",
        || async {
            let s = c.status(new).await;
            (s["mirrors"]["redis"]["replicated_progress"].as_u64() > Some(progress)).then_some(s)
        },
    )
    .await;
    assert_eq!(
        status["mirrors"]["redis"]["full_resyncs"], 0,
        "resumed from the replicated progress: {status}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_mirrors_at_start_do_not_stop_the_grid() {
    if common::deps::redis().is_none() {
        return;
    }
    let mut pg = mirror(
        MirrorKind::Postgres,
        "postgres://sel:hunter2@127.0.0.1:1/grid",
    );
    pg.mode = MirrorMode::Sync;
    let c = mirrored(
        3,
        vec![
            pg,
            mirror(MirrorKind::Redis, "redis://:hunter2@127.0.0.1:1/0"),
        ],
    )
    .await;
    let started = Instant::now();
    for i in 0..20 {
        let resp = c
            .http
            .post(c.url(1 + i % 3, "/se/grid/session"))
            .body(mirror_common::load::body(
                &format!("s{i}"),
                "http://n:5555",
                i,
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "20 writes took {:?}",
        started.elapsed()
    );
    let leader = c.leader().await;
    let status = eventually(
        Duration::from_secs(30),
        "both mirrors reported down",
        || async {
            let s = c.status(leader).await;
            (s["mirrors"]["postgres"]["state"] == "down"
                && s["mirrors"]["redis"]["state"] == "down")
                .then_some(s)
        },
    )
    .await;
    assert!(
        !status.to_string().contains("hunter2"),
        "a password leaked into the status: {status}"
    );
    assert!(
        c.mirror_handle(leader, MirrorKind::Postgres)
            .sync_timeouts
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_key_of_another_type_stops_only_the_mirror() {
    if common::deps::redis().is_none() {
        return;
    }
    let url = fresh_redis_db(2).await;
    let mut con = redis_con(&url).await;
    let _: () = redis::cmd("HSET")
        .arg("session:abc:uri")
        .arg("f")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    let (c, error) = failed_mirror(MirrorKind::Redis, &url).await;
    assert!(
        error.contains("session:abc:uri") && error.contains("hash"),
        "{error}"
    );
    assert_still_serving(&c).await;
    let ty: String = redis::cmd("TYPE")
        .arg("session:abc:uri")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(ty, "hash", "the foreign key was left alone");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_sync_mode_a_session_is_in_redis_when_the_grid_gets_its_answer() {
    if common::deps::redis().is_none() {
        return;
    }
    let url = fresh_redis_db(3).await;
    let mut m = mirror(MirrorKind::Redis, &url);
    m.mode = MirrorMode::Sync;
    let c = mirrored(3, vec![m]).await;
    let leader = c.leader().await;
    eventually(Duration::from_secs(30), "the mirror to be up", || async {
        (c.mirror_handle(leader, MirrorKind::Redis).state() == RunState::Up).then_some(())
    })
    .await;
    let mut con = redis_con(&url).await;
    for i in 0..20u64 {
        let id = format!("sync-{i}");
        let resp = c
            .http
            .post(c.url(1 + i % 3, "/se/grid/session"))
            .body(mirror_common::load::body(&id, "http://n:5555", i))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let uri: Option<String> = redis::cmd("GET")
            .arg(format!("session:{id}:uri"))
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(
            uri.as_deref(),
            Some("http://n:5555"),
            "{id} is in redis when the add is answered"
        );
    }
    let timeouts = c
        .mirror_handle(leader, MirrorKind::Redis)
        .sync_timeouts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(timeouts, 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_mirror_over_tls_checks_the_servers_certificate_against_its_ca_file() {
    if common::deps::redis().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = mirror_common::TlsFiles::new(dir.path(), "redis");
    let (ca_file, other_ca) = (files.ca.clone(), files.other_ca.clone());
    let redis = OwnRedis::start_tls(&files.cert, &files.key, &ca_file).await;

    // rediss:// with the server's CA: every session arrives.
    let mut tls = mirror(MirrorKind::Redis, &redis.url());
    tls.ca_file = Some(ca_file.clone());
    let c = mirrored(1, vec![tls]).await;
    let truth = mirror_common::add_sessions(&c).await;
    wait_caught_up(&c, 1, MirrorKind::Redis).await;
    let mut con = redis
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for s in truth.sessions() {
        let uri: Option<String> = redis::cmd("GET")
            .arg(format!("session:{}:uri", s.id))
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(uri.as_deref(), Some(s.uri.as_str()), "session {}", s.id);
    }
    c.shutdown().await;

    // Another CA's file, and plain redis:// against the TLS port: the mirror is down and the
    // Grid is served.
    let mut wrong_ca = mirror(MirrorKind::Redis, &redis.url());
    wrong_ca.ca_file = Some(other_ca);
    let plain = mirror(
        MirrorKind::Redis,
        &redis.url().replacen("rediss://", "redis://", 1),
    );
    for cfg in [wrong_ca, plain] {
        let c = mirrored(1, vec![cfg]).await;
        wait_mirror_down(&c, "redis", false).await;
        assert_still_serving(&c).await;
        c.shutdown().await;
    }
}

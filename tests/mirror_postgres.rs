//! The Postgres mirror against a real PostgreSQL: exact equality with the Raft state after a
//! mixed load through every member, Selenium's own queries, an outage during the load, and an
//! incompatible table.

mod common;
mod mirror_common;

use std::time::Duration;

use gridraft::mirror::MirrorKind;
use mirror_common::load::{
    assert_matches_model, load_during_outage, load_through_every_member, mixed_load,
    wait_mirror_down, Model,
};
use mirror_common::servers::OwnPostgres;
use mirror_common::stores::{
    connect_pg, expected_rows, fresh_pg_database, wait_caught_up, wait_rows_equal,
};
use mirror_common::{assert_still_serving, failed_mirror, mirror, mirrored};
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_mirror_equals_the_raft_state_after_a_mixed_load_through_every_member() {
    if common::deps::postgres().is_none() {
        return;
    }
    let url = fresh_pg_database("gridraft_mirror_equal").await;
    let c = mirrored(3, vec![mirror(MirrorKind::Postgres, &url)]).await;
    tracing::info!("phase: mixed load through members 1, 2 and 3");
    let truth = load_through_every_member(&c).await;
    assert!(
        truth.len() > 10,
        "the load leaves sessions behind ({})",
        truth.len()
    );

    tracing::info!(
        sessions = truth.len(),
        "phase: the mirror equals the Raft state, row by row"
    );
    let rows = wait_rows_equal(&url, &truth, Duration::from_secs(60)).await;

    tracing::info!("phase: Selenium's JdbcBackedSessionMap queries");
    let mut con = connect_pg(&url).await;
    for (id, (uri, stereotype, caps, start)) in &rows {
        // The JDBC statement verbatim, with Postgres's placeholder for JDBC's `?`.
        let found = sqlx::query("select * from sessions_map where session_ids = $1")
            .bind(id)
            .fetch_all(&mut con)
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "one row for {id}");
        let r = &found[0];
        assert_eq!(r.get::<String, _>("session_uri"), *uri);
        assert_eq!(r.get::<String, _>("session_caps"), *caps);
        assert_eq!(r.get::<String, _>("session_stereotype"), *stereotype);
        let start_col: String = r.get("session_start");
        assert_eq!(start_col, *start);
        assert!(
            start_col.starts_with('"') && start_col.ends_with("Z\""),
            "start is a quoted instant"
        );
        let record = match truth.get(id) {
            gridraft::map::Lookup::Found(r) => r,
            other => panic!("{id} is not live: {other:?}"),
        };
        assert_eq!(record.session().capabilities, *caps);
    }
    // A removal is remembered even after a re-add; pick a session that is gone now.
    let removed = truth
        .tombstones()
        .map(|(id, _)| id.to_owned())
        .find(|id| !matches!(truth.get(id), gridraft::map::Lookup::Found(_)))
        .expect("the load removed sessions");
    let none = sqlx::query("select * from sessions_map where session_ids = $1")
        .bind(&removed)
        .fetch_all(&mut con)
        .await
        .unwrap();
    assert!(none.is_empty(), "removed session {removed} has no row");

    let status = c.status(c.leader().await).await;
    assert_eq!(status["mirrors"]["postgres"]["state"], "up", "{status}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_during_the_load_then_restarted_converges_without_losing_or_resurrecting()
{
    if common::deps::postgres().is_none() {
        return;
    }
    let pg = OwnPostgres::start();
    let c = mirrored(3, vec![mirror(MirrorKind::Postgres, &pg.url())]).await;
    let mut model = Model::new();
    tracing::info!("phase: load with postgres up");
    mixed_load(&c, &[vec![1], vec![2], vec![3]], 60, 0, &mut model).await;
    wait_rows_equal(&pg.url(), &c.truth().await, Duration::from_secs(60)).await;

    tracing::info!("phase: postgres stopped; the Grid keeps answering, quickly");
    pg.stop();
    load_during_outage(&c, &mut model).await;
    let leader = wait_mirror_down(&c, "postgres", true).await;

    tracing::info!("phase: postgres back; the mirror converges");
    pg.restart();
    let truth = c.truth().await;
    assert_matches_model(&truth, &model);
    wait_rows_equal(&pg.url(), &truth, Duration::from_secs(60)).await;
    wait_caught_up(&c, leader, MirrorKind::Postgres).await;
    let status = c.status(leader).await;
    assert_eq!(status["mirrors"]["postgres"]["state"], "up", "{status}");
    assert_eq!(status["mirrors"]["postgres"]["lag_entries"], 0, "{status}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incompatible_sessions_map_table_stops_only_the_mirror() {
    if common::deps::postgres().is_none() {
        return;
    }
    let url = fresh_pg_database("gridraft_mirror_incompatible").await;
    let mut con = connect_pg(&url).await;
    sqlx::query("create table sessions_map (session_ids integer, session_caps text, session_uri varchar(256), session_stereotype text)")
        .execute(&mut con)
        .await
        .unwrap();
    let (c, error) = failed_mirror(MirrorKind::Postgres, &url).await;
    assert!(error.contains("session_ids has type integer"), "{error}");
    assert!(error.contains("session_start is missing"), "{error}");
    assert_still_serving(&c).await;
    let n: i64 = sqlx::query_scalar("select count(*) from sessions_map")
        .fetch_one(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing was written into the incompatible table");
    assert_eq!(expected_rows(&c.truth().await).len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_writes_the_cluster_into_a_selenium_table() {
    if common::deps::postgres().is_none() {
        return;
    }
    let url = fresh_pg_database("gridraft_export").await;
    let c = mirrored(3, vec![]).await;
    let mut model = Model::new();
    mixed_load(&c, &[vec![1], vec![2], vec![3]], 40, 7, &mut model).await;
    assert!(c.truth().await.len() > 5);
    let truth = c.truth().await;
    tracing::info!("phase: gridraft export --to postgres://... --replace");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridraft"))
        .args(["export", "--to", &url, "--replace", "--peer"])
        .arg(c.members[&2].peer.to_string())
        .env("GRIDRAFT_CLUSTER_SECRET", common::SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("exported {} sessions", truth.len())),
        "{stdout}"
    );
    println!("{stdout}");
    wait_rows_equal(&url, &truth, Duration::from_secs(5)).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_mirror_over_tls_checks_the_servers_certificate_as_libpq_does() {
    if common::deps::postgres().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = mirror_common::TlsFiles::new(dir.path(), "postgres");
    let (ca_file, other_ca) = (files.ca.clone(), files.other_ca.clone());
    let pg = OwnPostgres::start_tls(&files.cert, &files.key);
    let tls_url = |mode: &str, root: &std::path::Path| {
        format!("{}?sslmode={mode}&sslrootcert={}", pg.url(), root.display())
    };

    // verify-full with the server's CA: the mirror writes, over TLS.
    let url = tls_url("verify-full", &ca_file);
    let c = mirrored(1, vec![mirror(MirrorKind::Postgres, &url)]).await;
    let truth = mirror_common::add_sessions(&c).await;
    wait_rows_equal(&url, &truth, Duration::from_secs(60)).await;
    let mut con = connect_pg(&url).await;
    let ssl: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(&mut con)
        .await
        .unwrap();
    assert!(ssl, "the test's own connection with the same URL is TLS");
    let tls_writers: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) \
         where s.ssl and a.pid <> pg_backend_pid() and a.datname = 'postgres'",
    )
    .fetch_one(&mut con)
    .await
    .unwrap();
    assert!(tls_writers >= 1, "the mirror's connection is TLS");
    c.shutdown().await;

    // A CA that did not sign the server's certificate: no connection, the mirror is down and
    // the Grid is served.
    let (c, error) = failed_or_down(&tls_url("verify-full", &other_ca)).await;
    assert_still_serving(&c).await;
    tracing::info!(error, "refused as expected");
    c.shutdown().await;
}

/// One member mirroring to Postgres at `url` that cannot connect: waits until the leader
/// reports the mirror down; its last error.
async fn failed_or_down(url: &str) -> (common::TestCluster, String) {
    let c = mirrored(1, vec![mirror(MirrorKind::Postgres, url)]).await;
    wait_mirror_down(&c, "postgres", false).await;
    let leader = c.leader().await;
    let error = c.status(leader).await["mirrors"]["postgres"]["error"].to_string();
    (c, error)
}

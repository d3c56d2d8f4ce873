//! Interoperability with the real Java code: Selenium's `RedisBackedSessionMap` (the `sessions`
//! server from the 4.48.0 jar) reading what gridraft's Redis mirror wrote, and `gridraft import`
//! of a store the Java server wrote. Both use Redis database 0 (the only one Java can use), so
//! they run one at a time.

mod common;
mod mirror_common;

use std::time::Duration;

use gridraft::mirror::MirrorKind;
use mirror_common::load::body;
use mirror_common::servers::JavaSessions;
use mirror_common::stores::{fresh_redis_db, wait_keys_equal};
use mirror_common::{mirror, mirrored};

static DB0: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_port() -> u16 {
    let url = common::deps::env_url(common::deps::REDIS_VAR);
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap();
    port.parse()
        .expect("GRIDRAFT_TEST_REDIS_URL ends with :PORT")
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Vec<u8>) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn path(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sessions with the values Selenium's writer is particular about, and an id with a space.
fn sample() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..8u64 {
        let id = if i == 7 {
            "a b+c".to_owned()
        } else {
            format!("java-interop-{i}")
        };
        out.push((
            id.clone(),
            body(&id, &format!("http://10.0.0.{}:5555", i % 3), i * 111),
        ));
    }
    out.push((
        "offset-and-null".into(),
        r#"{"capabilities": {"acceptInsecureCerts": null, "platformName": "linux", "n": 1.0, "big": 9223372036854775807}, "sessionId": "offset-and-null", "start": "2024-05-01T10:20:30+02:00", "stereotype": {}, "uri": "http://10.0.0.9:5555"}"#.into(),
    ));
    out.push((
        "epoch-millis".into(),
        r#"{"capabilities": {"browserName": "firefox"}, "sessionId": "epoch-millis", "start": 1714558830123, "stereotype": {"browserName": "firefox"}, "uri": "http://10.0.0.9:5555"}"#.into(),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_java_redis_session_map_answers_like_gridraft_for_sessions_gridraft_wrote() {
    let Some(jar) = common::deps::java() else {
        return;
    };
    if common::deps::redis().is_none() {
        return;
    }
    let _db0 = DB0.lock().await;
    let url = fresh_redis_db(0).await;
    let c = mirrored(3, vec![mirror(MirrorKind::Redis, &url)]).await;
    tracing::info!("phase: gridraft writes sessions through every member; two are removed");
    let sessions = sample();
    for (i, (_, b)) in sessions.iter().enumerate() {
        let r = c
            .http
            .post(c.url(1 + i as u64 % 3, "/se/grid/session"))
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for id in ["java-interop-1", "java-interop-4"] {
        let r = c
            .http
            .delete(c.url(2, &format!("/se/grid/session/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_keys_equal(&url, &c.truth().await, Duration::from_secs(60)).await;

    tracing::info!("phase: the Java RedisBackedSessionMap reads the same Redis");
    let java = JavaSessions::start(&jar, redis_port()).await;
    let (mut identical, mut removed) = (0, 0);
    for (id, _) in &sessions {
        for suffix in ["", "/uri"] {
            let p = format!("/se/grid/session/{}{suffix}", path(id));
            let (gs, gb) = get(&c.http, c.url(3, &p)).await;
            let (js, jb) = get(&c.http, java.url(&p)).await;
            assert_eq!(gs, js, "status of GET {p}: gridraft {gs}, java {js}");
            if gs == 200 {
                assert_eq!(
                    String::from_utf8_lossy(&gb),
                    String::from_utf8_lossy(&jb),
                    "GET {p}: gridraft and Java answer different bytes"
                );
                identical += 1;
            } else {
                assert_eq!(gs, 404);
                removed += 1;
            }
        }
    }
    println!(
        "java interop (RedisBackedSessionMap, selenium-server-4.48.0): {identical} lookups byte-identical to gridraft, {removed} lookups of removed sessions 404 on both"
    );
    assert_eq!(identical, 16);
    assert_eq!(removed, 4);
    drop(java);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_of_a_store_written_by_java_gives_the_same_sessions_back() {
    let Some(jar) = common::deps::java() else {
        return;
    };
    if common::deps::redis().is_none() {
        return;
    }
    let _db0 = DB0.lock().await;
    let url = fresh_redis_db(0).await;
    tracing::info!("phase: the Java server writes a store");
    let java = JavaSessions::start(&jar, redis_port()).await;
    let http = reqwest::Client::new();
    let sessions = sample();
    let mut reference = Vec::new();
    for (id, b) in &sessions {
        let r = http
            .post(java.url("/se/grid/session"))
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "Java accepts {id}");
        reference.push((
            id.clone(),
            get(&http, java.url(&format!("/se/grid/session/{}", path(id)))).await,
        ));
    }
    drop(java);

    tracing::info!("phase: gridraft import --from redis://... --to a member");
    let c = mirrored(3, vec![]).await;
    let import = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridraft"))
            .args(["import", "--from", &url, "--to", &c.url(2, "")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = import();
    println!("{first}");
    assert!(
        first.contains(&format!("{} loaded, 0 skipped", sessions.len())),
        "{first}"
    );

    tracing::info!("phase: the cluster answers exactly what Java answered");
    for (id, (status, bytes)) in &reference {
        let (gs, gb) = get(&c.http, c.url(3, &format!("/se/grid/session/{}", path(id)))).await;
        assert_eq!(
            (gs, String::from_utf8_lossy(&gb)),
            (*status, String::from_utf8_lossy(bytes)),
            "GET {id}"
        );
    }
    let again = import();
    println!("{again}");
    assert!(
        again.contains(&format!("0 loaded, {} skipped", sessions.len())),
        "{again}"
    );
    assert!(
        again.contains("already in the cluster, identical"),
        "{again}"
    );
    c.shutdown().await;
}

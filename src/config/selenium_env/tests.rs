use clap::Parser;

use super::*;
use crate::cli::{Cli, Command, ServeArgs};

fn env(pairs: &[(&str, &str)]) -> SeleniumEnv {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    SeleniumEnv::from_lookup(|name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

/// `gridraft serve ARGS` loaded with `selenium` as the `SE_*` environment.
fn load(args: &[&str], selenium: &SeleniumEnv) -> Result<Settings, ConfigError> {
    let argv = ["gridraft", "serve"].iter().chain(args).copied();
    let Some(Command::Serve(serve)) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("expected serve");
    };
    serve.load_with(selenium)
}

/// The `sessions` service's environment in docker-selenium's full-grid compose file.
const COMPOSE: &[(&str, &str)] = &[
    ("SE_EVENT_BUS_HOST", "selenium-event-bus"),
    ("SE_EVENT_BUS_PUBLISH_PORT", "4442"),
    ("SE_EVENT_BUS_SUBSCRIBE_PORT", "4443"),
];

#[test]
fn the_compose_files_event_bus_variables_configure_the_event_bus() {
    let s = load(&[], &env(COMPOSE)).unwrap();
    assert_eq!(
        s.events.publish_events.as_deref(),
        Some("tcp://selenium-event-bus:4442")
    );
    assert_eq!(
        s.events.subscribe_events.as_deref(),
        Some("tcp://selenium-event-bus:4443")
    );
    assert_eq!(s.listen, "0.0.0.0:5556");
    s.validate().unwrap();
}

#[test]
fn a_bus_host_alone_uses_seleniums_default_ports() {
    let s = load(&[], &env(&[("SE_EVENT_BUS_HOST", "bus")])).unwrap();
    assert_eq!(s.events.publish_events.as_deref(), Some("tcp://bus:4442"));
    assert_eq!(s.events.subscribe_events.as_deref(), Some("tcp://bus:4443"));
}

#[test]
fn bus_ports_without_a_host_configure_nothing() {
    let s = load(&[], &env(&[("SE_EVENT_BUS_PUBLISH_PORT", "4442")])).unwrap();
    assert_eq!(s.events.publish_events, None);
}

#[test]
fn gridraft_variables_and_flags_win_over_selenium_variables() {
    let selenium = env(&[
        ("SE_EVENT_BUS_HOST", "selenium-bus"),
        ("SE_REGISTRATION_SECRET", "from-selenium"),
        ("SE_SESSIONS_PORT", "6000"),
    ]);
    let s = load(
        &[
            "--publish-events",
            "tcp://gridraft-bus:1",
            "--registration-secret-file",
            "/run/secret",
            "--listen",
            "127.0.0.1:7000",
        ],
        &selenium,
    )
    .unwrap();
    assert_eq!(
        s.events.publish_events.as_deref(),
        Some("tcp://gridraft-bus:1")
    );
    // Not given as GRIDRAFT_*: still Selenium's.
    assert_eq!(
        s.events.subscribe_events.as_deref(),
        Some("tcp://selenium-bus:4443")
    );
    assert_eq!(s.events.registration_secret, None);
    assert_eq!(
        s.events.registration_secret_file.as_deref(),
        Some(std::path::Path::new("/run/secret"))
    );
    assert_eq!(s.listen, "127.0.0.1:7000");
}

#[test]
fn selenium_variables_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gridraft.toml");
    std::fs::write(
        &file,
        "listen = \"10.0.0.1:5556\"\n[events]\npublish-events = \"tcp://file:1\"\n\
         subscribe-events = \"tcp://file:2\"\nregistration-secret-file = \"/from/file\"\n",
    )
    .unwrap();
    let selenium = env(&[
        ("SE_EVENT_BUS_HOST", "bus"),
        ("SE_REGISTRATION_SECRET", "s3cret"),
        ("SE_SESSIONS_MAP_PORT", "5600"),
    ]);
    let s = load(&["--config", file.to_str().unwrap()], &selenium).unwrap();
    assert_eq!(s.events.publish_events.as_deref(), Some("tcp://bus:4442"));
    assert_eq!(s.events.registration_secret.as_deref(), Some("s3cret"));
    assert_eq!(s.events.registration_secret_file, None);
    // The port changes, the file's address stays.
    assert_eq!(s.listen, "10.0.0.1:5600");
}

#[test]
fn the_sessions_port_wins_over_the_map_port() {
    let selenium = env(&[
        ("SE_SESSIONS_PORT", "5700"),
        ("SE_SESSIONS_MAP_PORT", "5600"),
    ]);
    assert_eq!(load(&[], &selenium).unwrap().listen, "0.0.0.0:5700");
}

#[test]
fn bind_host_binds_to_the_sessions_host_only_when_true() {
    let host = ("SE_SESSIONS_HOST", "10.1.2.3");
    let s = load(&[], &env(&[host])).unwrap();
    assert_eq!(s.listen, "0.0.0.0:5556");
    let s = load(&[], &env(&[host, ("SE_BIND_HOST", "false")])).unwrap();
    assert_eq!(s.listen, "0.0.0.0:5556");
    let s = load(&[], &env(&[host, ("SE_BIND_HOST", "true")])).unwrap();
    assert_eq!(s.listen, "10.1.2.3:5556");
}

#[test]
fn empty_selenium_variables_count_as_unset() {
    let selenium = env(&[("SE_EVENT_BUS_HOST", ""), ("SE_SESSIONS_PORT", " ")]);
    let s = load(&[], &selenium).unwrap();
    assert_eq!(s.events.publish_events, None);
    assert_eq!(s.listen, "0.0.0.0:5556");
}

#[test]
fn bad_selenium_values_are_reported_by_variable_name() {
    let selenium = env(&[
        ("SE_EVENT_BUS_HOST", "bus"),
        ("SE_EVENT_BUS_PUBLISH_PORT", "44x2"),
        ("SE_SESSIONS_PORT", "70000"),
        ("SE_BIND_HOST", "true"),
        ("SE_SESSIONS_HOST", "sessions.local"),
    ]);
    let ConfigError::Invalid(problems) = load(&[], &selenium).unwrap_err() else {
        panic!("expected Invalid");
    };
    let text = problems.join("\n");
    assert!(
        text.contains("SE_EVENT_BUS_PUBLISH_PORT: \"44x2\" is not a port number"),
        "{text}"
    );
    assert!(
        text.contains("SE_SESSIONS_PORT: \"70000\" is not a port number"),
        "{text}"
    );
    assert!(
        text.contains("SE_SESSIONS_HOST: \"sessions.local\" is not an IP address"),
        "{text}"
    );
}

#[test]
fn serve_args_default_reads_no_selenium_variable() {
    let s = ServeArgs::default()
        .load_with(&SeleniumEnv::default())
        .unwrap();
    assert_eq!(s.events.publish_events, None);
}

//! Differential event tests: the same sessions and the same event sequences go to the real
//! Selenium 4.48.0 `sessions` server (Java `LocalSessionMap`) and to a three-member gridraft
//! cluster, both subscribed to one real Java `event-bus` with one registration secret. After each
//! scenario, every id involved is read with `GET /se/grid/session/{id}` from Java and from every
//! running gridraft member; status codes, 200 bodies and 404 messages must agree, and must match
//! what the scenario expects (so the two cannot agree on being wrong, e.g. both deaf).
//!
//! How a scenario knows both sides have processed its events:
//! 1. it polls, with a generous deadline, until Java and every member show the expected end
//!    state (events that change something);
//! 2. then it publishes a sentinel `session-closed` for a dedicated session followed by a marker
//!    event, `node-drain-complete`, which the session map ignores but gridraft counts per
//!    member (`gridraft_event_bus_messages_total{outcome="ignored",kind="node-drain-complete"}`).
//!    Java's polling thread, and each member's subscriber thread, take messages in order from
//!    one socket, so once Java has removed the sentinel and every member has counted the marker,
//!    every earlier message has passed the checks that drop it (secret, id, frames). Caveat:
//!    Java runs listeners on a thread pool, so a listener of an earlier event could in theory
//!    still be running; it was submitted before the sentinel's, and step 1 already waited for
//!    every expected change, so at worst a late wrong removal would be missed, never a flake.
//!
//! Normalisations before comparing (all in `scenario::normalise_message`):
//! * Java's `\nBuild info: ...\nSystem info: ...\nDriver info: ...` suffix is cut from a 404
//!   message (gridraft omits it; docs/compatibility.md#errors);
//! * in a removal message, the removal instant becomes `<instant>` and `(<n> seconds ago)`
//!   becomes `(<age>)`, after checking each side's instant is a valid `Instant.toString()` and
//!   its age has the right form: the two servers remove at different instants;
//! * 200 bodies are compared as JSON values (byte equality is `tests/differential.rs`'s job).
//!
//! Java reads the four frames of a message with four blocking `recv()`s and does not drain a
//! message it gives up on early [jar: `UnboundZmqEventBus$PollingRunnable.run`], so a message
//! with fewer than four frames swallows the first frame(s) of whatever comes next. Each short
//! message is therefore followed by three one-frame `pad` messages, which put Java back in step
//! (a `pad` read as a secret, id or data frame is rejected, one read as a name is ignored);
//! gridraft reads whole multipart messages and rejects each of these on its own.
//!
//! The Java bus and `sessions` server are started once per test binary under a `sh` supervisor
//! that kills them when this process exits; each test has its own gridraft cluster and
//! publisher, and the tests run one at a time (a shared lock) because a malformed message from
//! one test would otherwise desynchronise Java for another.
//!
//! Layout: `event_differential/java.rs` starts the Java side, `payloads.rs` builds events like a
//! real Grid's, `scenario.rs` is the harness (publish, wait, compare); the scenarios are below.
//! `documented_divergences_from_java_stay_as_documented` pins the four places where gridraft
//! deliberately differs (docs/grid.md lists them).

#[path = "event_bus_common/mod.rs"]
mod bus;
mod common;
#[path = "event_differential/java.rs"]
mod java;
#[path = "event_differential/payloads.rs"]
mod payloads;
#[path = "event_differential/scenario.rs"]
mod scenario;

use gridraft::session::RemovalReason;
use serde_json::json;
use uuid::Uuid;

use payloads::{closed, frames, node_status, signed};
use scenario::{Expect, Scenario};

const SECRET: &str = bus::SECRET;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_closed_with_each_reason_and_the_legacy_payload_removes_alike() {
    let Some(mut s) = Scenario::start("closed").await else {
        return;
    };
    let node = "http://10.1.0.1:5555";
    for reason in [
        RemovalReason::QuitCommand,
        RemovalReason::Timeout,
        RemovalReason::NodeRemoved,
        RemovalReason::NodeRestarted,
    ] {
        let id = s.id(&reason.name().to_lowercase());
        s.add(&id, node).await;
        s.publish("session-closed", &closed(&id, reason.name(), node));
        s.expect(
            &id,
            Expect::Removed {
                reason,
                node: node.into(),
            },
        );
    }
    // Legacy payload: a bare JSON string means QUIT_COMMAND.
    let legacy = s.id("legacy");
    s.add(&legacy, node).await;
    s.publish("session-closed", &serde_json::to_string(&legacy).unwrap());
    // nodeUri in the payload is not compared with the stored uri; the 404 quotes the stored one.
    let elsewhere = s.id("payload-names-another-node");
    s.add(&elsewhere, node).await;
    s.publish(
        "session-closed",
        &closed(&elsewhere, "TIMEOUT", "http://10.1.0.99:5555"),
    );
    let bystander = s.id("bystander");
    s.add(&bystander, node).await;
    let never_added = s.id("never-added");
    s.publish(
        "session-closed",
        &closed(&never_added, "QUIT_COMMAND", node),
    );
    s.expect(
        &legacy,
        Expect::Removed {
            reason: RemovalReason::QuitCommand,
            node: node.into(),
        },
    );
    s.expect(
        &elsewhere,
        Expect::Removed {
            reason: RemovalReason::Timeout,
            node: node.into(),
        },
    );
    s.expect(&never_added, Expect::Unknown);
    s.settle_and_compare().await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_payloads_unknown_events_and_bad_frames_change_nothing_alike() {
    let Some(mut s) = Scenario::start("unusable").await else {
        return;
    };
    let node = "http://10.4.0.1:5555";
    let id = |s: &Scenario, n: &str| s.id(n);

    // Payloads a listener cannot use: the event is dropped and the session kept.
    let unknown_reason = id(&s, "reason-quit");
    s.add(&unknown_reason, node).await;
    s.publish("session-closed", &closed(&unknown_reason, "quit", node));
    let no_reason = id(&s, "no-reason");
    s.add(&no_reason, node).await;
    s.publish(
        "session-closed",
        &json!({"sessionId": no_reason, "nodeUri": node}).to_string(),
    );
    let lower_case_reason = id(&s, "reason-lower-case");
    s.add(&lower_case_reason, node).await;
    s.publish(
        "session-closed",
        &closed(&lower_case_reason, "quit_command", node),
    );

    // Names the session map does not listen to, carrying payloads it would act on.
    let unknown_names = id(&s, "unknown-names");
    s.add(&unknown_names, node).await;
    let legacy = serde_json::to_string(&unknown_names).unwrap();
    for name in [
        "session-created",
        "node-heartbeat",
        "Session-Closed",
        "session-closed ",
        "sessionclosed",
        "gridraft-made-up",
    ] {
        s.publish(name, &legacy);
    }
    s.publish("node-status", &node_status(node, &[&unknown_names]));
    s.publish(
        "node-added",
        &serde_json::to_string(&Uuid::new_v4().to_string()).unwrap(),
    );

    // Frame 4 not JSON: dropped without remembering the id, so a corrected copy with the SAME
    // id is applied.
    let not_json = id(&s, "data-not-json");
    s.add(&not_json, node).await;
    let event_id = Uuid::new_v4().to_string();
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &event_id,
        "not json at all",
    ));
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &event_id,
        &closed(&not_json, "TIMEOUT", node),
    ));
    s.expect(
        &not_json,
        Expect::Removed {
            reason: RemovalReason::Timeout,
            node: node.into(),
        },
    );
    // An empty frame 4 is not JSON either (Java's parser throws on it too): not burned.
    let empty = id(&s, "data-empty");
    s.add(&empty, node).await;
    let event_id = Uuid::new_v4().to_string();
    s.send(&frames("session-closed", &signed(SECRET), &event_id, ""));
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &event_id,
        &closed(&empty, "QUIT_COMMAND", node),
    ));
    s.expect(
        &empty,
        Expect::Removed {
            reason: RemovalReason::QuitCommand,
            node: node.into(),
        },
    );
    // JSON that is no SessionClosedData: dropped by the listener after the id was remembered,
    // so a corrected copy with the same id is a duplicate.
    let null = id(&s, "data-null-then-fixed");
    s.add(&null, node).await;
    let event_id = Uuid::new_v4().to_string();
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &event_id,
        "null",
    ));
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &event_id,
        &closed(&null, "QUIT_COMMAND", node),
    ));
    let array = id(&s, "data-array");
    s.add(&array, node).await;
    s.publish("session-closed", &json!([array]).to_string());
    let numeric = id(&s, "numeric-session-id");
    s.add(&numeric, node).await;
    s.publish(
        "session-closed",
        r#"{"sessionId": 42, "reason": "QUIT_COMMAND"}"#,
    );
    // Whitespace around a legacy payload is still JSON.
    let spaced = id(&s, "legacy-with-spaces");
    s.add(&spaced, node).await;
    s.publish("session-closed", &format!("  \"{spaced}\"  "));
    s.expect(
        &spaced,
        Expect::Removed {
            reason: RemovalReason::QuitCommand,
            node: node.into(),
        },
    );
    let stays_not_json = id(&s, "data-not-json-only");
    s.add(&stays_not_json, node).await;
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &Uuid::new_v4().to_string(),
        &format!("{{\"sessionId\": \"{stays_not_json}\", \"reason\": \"QUIT_COMMAND\""),
    ));

    // Wrong frame counts, each followed by padding for Java (module docs).
    let short = id(&s, "short-messages");
    s.add(&short, node).await;
    let legacy_short = serde_json::to_string(&short).unwrap();
    let full = frames(
        "session-closed",
        &signed(SECRET),
        &Uuid::new_v4().to_string(),
        &legacy_short,
    );
    for n in 1..=3 {
        s.send(&full[..n]);
        s.pad();
    }
    // An empty multipart part list cannot be sent; a single empty frame can.
    s.send(&[Vec::new()]);
    s.pad();
    s.settle_and_compare().await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_burn_event_ids_and_duplicates_are_dropped_alike() {
    let Some(mut s) = Scenario::start("secret").await else {
        return;
    };
    let node = "http://10.5.0.1:5555";

    // Wrong secret: dropped, and its id is burned, so the correctly signed copy is dropped too.
    let wrong = s.id("wrong-secret");
    s.add(&wrong, node).await;
    let burned = Uuid::new_v4().to_string();
    let payload = closed(&wrong, "QUIT_COMMAND", node);
    s.send(&frames(
        "session-closed",
        &signed("wrong"),
        &burned,
        &payload,
    ));
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &burned,
        &payload,
    ));
    // The default secret "" is just another wrong one.
    let empty = s.id("empty-secret");
    s.add(&empty, node).await;
    s.send(&frames(
        "session-closed",
        &signed(""),
        &Uuid::new_v4().to_string(),
        &closed(&empty, "QUIT_COMMAND", node),
    ));
    // A secret frame that is not a JSON string is rejected before the id is read: not burned.
    let unquoted = s.id("unquoted-secret-then-fixed");
    s.add(&unquoted, node).await;
    let kept = Uuid::new_v4().to_string();
    let payload = closed(&unquoted, "TIMEOUT", node);
    s.send(&frames("session-closed", SECRET, &kept, &payload));
    s.pad(); // Java stops reading after the secret frame (module docs).
    s.send(&frames("session-closed", &signed(SECRET), &kept, &payload));
    s.expect(
        &unquoted,
        Expect::Removed {
            reason: RemovalReason::Timeout,
            node: node.into(),
        },
    );
    // Frame 2 is parsed as JSON, so whitespace around the quoted secret is fine.
    let spaced = s.id("secret-with-spaces");
    s.add(&spaced, node).await;
    s.send(&frames(
        "session-closed",
        &format!(" {} ", signed(SECRET)),
        &Uuid::new_v4().to_string(),
        &closed(&spaced, "TIMEOUT", node),
    ));
    s.expect(
        &spaced,
        Expect::Removed {
            reason: RemovalReason::Timeout,
            node: node.into(),
        },
    );
    // Ids are compared as UUIDs, not text: an upper-case id is accepted, and is a duplicate of
    // the same id in lower case.
    let upper = s.id("upper-case-id");
    let upper_dup = s.id("upper-case-id-duplicate");
    s.add(&upper, node).await;
    s.add(&upper_dup, node).await;
    let same = Uuid::new_v4().to_string();
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &same.to_uppercase(),
        &closed(&upper, "TIMEOUT", node),
    ));
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &same,
        &closed(&upper_dup, "TIMEOUT", node),
    ));
    s.expect(
        &upper,
        Expect::Removed {
            reason: RemovalReason::Timeout,
            node: node.into(),
        },
    );
    // An id frame that is not a UUID: rejected.
    let bad_id = s.id("bad-event-id");
    s.add(&bad_id, node).await;
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        "not-a-uuid",
        &closed(&bad_id, "QUIT_COMMAND", node),
    ));
    s.pad();

    // Duplicates: the first copy applies, a second copy with the same id (any payload) is
    // dropped, and a new id is applied again.
    let first = s.id("dup-first");
    let second = s.id("dup-second-copy-only");
    let third = s.id("dup-then-new-id");
    for id in [&first, &second, &third] {
        s.add(id, node).await;
    }
    let dup = Uuid::new_v4().to_string();
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &dup,
        &closed(&first, "TIMEOUT", node),
    ));
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &dup,
        &closed(&second, "TIMEOUT", node),
    ));
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &dup,
        &closed(&third, "TIMEOUT", node),
    ));
    s.publish("session-closed", &closed(&third, "QUIT_COMMAND", node));
    s.expect(
        &first,
        Expect::Removed {
            reason: RemovalReason::Timeout,
            node: node.into(),
        },
    );
    s.expect(
        &third,
        Expect::Removed {
            reason: RemovalReason::QuitCommand,
            node: node.into(),
        },
    );
    s.settle_and_compare().await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_removed_removes_every_session_at_the_external_uri_alike() {
    let Some(mut s) = Scenario::start("removed").await else {
        return;
    };
    let node = "http://10.2.0.1:5555";
    let other = "http://10.2.0.2:5555";
    let listed = s.id("listed-in-slots");
    let unlisted = s.id("not-listed-in-slots");
    let slash = s.id("trailing-slash");
    let elsewhere = s.id("other-node");
    let listed_elsewhere = s.id("listed-but-stored-elsewhere");
    s.add(&listed, node).await;
    s.add(&unlisted, node).await;
    s.add(&slash, &format!("{node}/")).await;
    s.add(&elsewhere, other).await;
    s.add(&listed_elsewhere, other).await;
    s.publish(
        "node-removed",
        &node_status(node, &[&listed, &listed_elsewhere]),
    );
    for id in [&listed, &unlisted] {
        s.expect(
            id,
            Expect::Removed {
                reason: RemovalReason::NodeRemoved,
                node: node.into(),
            },
        );
    }
    // A node with no session at all: nothing to do.
    s.publish("node-removed", &node_status("http://10.2.0.9:5555", &[]));
    s.settle_and_compare().await;

    // The trailing-slash node is another node: its own node-removed removes its session.
    let slashed = format!("{node}/");
    s.publish("node-removed", &node_status(&slashed, &[]));
    s.expect(
        &slash,
        Expect::Removed {
            reason: RemovalReason::NodeRemoved,
            node: slashed.clone(),
        },
    );
    s.settle_and_compare().await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_removes_by_exact_uri_and_spares_sessions_re_added_elsewhere() {
    let Some(mut s) = Scenario::start("restarted").await else {
        return;
    };
    let old = "http://10.3.0.1:5555";
    let new = "http://10.3.0.2:5555";
    let on_old = s.id("on-old-node");
    let also_on_old = s.id("also-on-old-node");
    let slash = s.id("on-old-node-with-slash");
    let moved = s.id("re-added-at-new-node");
    let on_new = s.id("on-new-node");
    s.add(&on_old, old).await;
    s.add(&also_on_old, old).await;
    s.add(&slash, &format!("{old}/")).await;
    s.add(&moved, old).await;
    s.add(&moved, new).await;
    s.add(&on_new, new).await;
    // Like the distributor's: the status of the node before the restart, its session listed.
    s.publish("node-restarted", &node_status(old, &[&on_old]));
    for id in [&on_old, &also_on_old] {
        s.expect(
            id,
            Expect::Removed {
                reason: RemovalReason::NodeRestarted,
                node: old.into(),
            },
        );
    }
    s.settle_and_compare().await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_take_effect_when_the_gridraft_leader_is_killed_just_before_they_are_published() {
    let Some(mut s) = Scenario::start("leader-kill").await else {
        return;
    };
    let node = "http://10.6.0.1:5555";
    let restarted = "http://10.6.0.2:5555";
    let closed_id = s.id("closed");
    let on_removed = s.id("on-removed-node");
    let on_restarted = s.id("on-restarted-node");
    let live = s.id("live");
    s.add(&closed_id, "http://10.6.0.3:5555").await;
    s.add(&on_removed, node).await;
    s.add(&on_restarted, restarted).await;
    s.add(&live, "http://10.6.0.4:5555").await;
    let leader = s.cluster.leader().await;
    // Every member has applied the adds before one of them dies.
    for member in s.cluster.running() {
        s.cluster.wait_caught_up(member).await;
    }
    s.cluster.kill(leader).await;
    s.phase(&format!(
        "killed the gridraft leader, member {leader}; publishing"
    ));
    s.publish(
        "session-closed",
        &closed(&closed_id, "TIMEOUT", "http://10.6.0.3:5555"),
    );
    s.publish("node-removed", &node_status(node, &[&on_removed]));
    s.publish("node-restarted", &node_status(restarted, &[]));
    s.expect(
        &closed_id,
        Expect::Removed {
            reason: RemovalReason::Timeout,
            node: "http://10.6.0.3:5555".into(),
        },
    );
    s.expect(
        &on_removed,
        Expect::Removed {
            reason: RemovalReason::NodeRemoved,
            node: node.into(),
        },
    );
    s.expect(
        &on_restarted,
        Expect::Removed {
            reason: RemovalReason::NodeRestarted,
            node: restarted.into(),
        },
    );
    s.settle_and_compare().await;
    let new_leader = s.cluster.leader().await;
    s.phase(&format!(
        "member {new_leader} leads; restarting member {leader}"
    ));
    s.cluster.restart(leader).await;
    s.cluster.wait_caught_up(leader).await;
    // The restarted member missed the events on the bus; it learns them from the log.
    s.settle_and_compare().await;
    s.finish().await;
}

/// Where gridraft deliberately does not do what Java does; each case is one a real Grid never
/// produces, and each is listed in docs/grid.md. This test keeps that list honest: if one of
/// them starts to agree, the docs (and this test) need updating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_divergences_from_java_stay_as_documented() {
    let Some(mut s) = Scenario::start("divergence").await else {
        return;
    };
    let node = "http://10.7.0.1:5555";

    // 1. Five frames whose first four are a valid event. Java reads exactly four frames and
    //    applies them (the fifth becomes the "name" of the next message, ignored); gridraft
    //    drops any message that is not exactly four frames (issue 7: malformed frames never
    //    change the map).
    let five = s.id("five-frames");
    s.add(&five, node).await;
    let mut message = frames(
        "session-closed",
        &signed(SECRET),
        &Uuid::new_v4().to_string(),
        &closed(&five, "TIMEOUT", node),
    );
    message.push(b"pad".to_vec());
    s.send(&message);
    s.pad();
    s.diverge(
        five,
        (
            Expect::Removed {
                reason: RemovalReason::Timeout,
                node: node.into(),
            },
            Expect::Live,
        ),
    );

    // 2. An incomplete NodeStatus (only externalUri). Java's strict decoder drops it; gridraft
    //    needs only externalUri (docs/compatibility.md#where-events-differ-from-java).
    let incomplete = s.id("incomplete-node-status");
    s.add(&incomplete, "http://10.7.0.2:5555").await;
    s.publish(
        "node-removed",
        &json!({"externalUri": "http://10.7.0.2:5555"}).to_string(),
    );
    s.diverge(
        incomplete,
        (
            Expect::Live,
            Expect::Removed {
                reason: RemovalReason::NodeRemoved,
                node: "http://10.7.0.2:5555".into(),
            },
        ),
    );

    // 3. URIs equal for java.net.URI but not as text (scheme and host case, escape case). Java
    //    removes, quoting the event's URI; gridraft compares the text exactly (an
    //    acceptable approximation; a node reports the same string it registered with).
    for (name, stored, event) in [
        (
            "host-case",
            "http://node-case:5555",
            "HTTP://Node-Case:5555",
        ),
        (
            "escape-case",
            "http://10.7.0.3:5555/a%7e",
            "http://10.7.0.3:5555/a%7E",
        ),
    ] {
        let id = s.id(name);
        s.add(&id, stored).await;
        s.publish("node-restarted", &node_status(event, &[]));
        s.diverge(
            id,
            (
                Expect::Removed {
                    reason: RemovalReason::NodeRestarted,
                    node: event.into(),
                },
                Expect::Live,
            ),
        );
    }
    // 4. A wrongly signed message whose data is not JSON, then the signed copy with its id.
    //    Java parses the data first, drops the message there without remembering its id, and
    //    applies the signed copy; gridraft checks the secret before parsing anything, uses the
    //    id up (as both do for any other wrongly signed message) and drops the signed copy.
    let unparsed = s.id("wrong-secret-bad-data-then-signed");
    s.add(&unparsed, node).await;
    let event_id = Uuid::new_v4().to_string();
    s.send(&frames(
        "session-closed",
        &signed("wrong"),
        &event_id,
        "not json",
    ));
    s.send(&frames(
        "session-closed",
        &signed(SECRET),
        &event_id,
        &closed(&unparsed, "TIMEOUT", node),
    ));
    s.diverge(
        unparsed,
        (
            Expect::Removed {
                reason: RemovalReason::Timeout,
                node: node.into(),
            },
            Expect::Live,
        ),
    );
    s.settle_and_compare().await;
    s.finish().await;
}

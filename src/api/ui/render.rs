//! The status page's HTML: plain data in, one self-contained document out (inline CSS, no
//! script, no external asset, refreshing itself every five seconds).
//!
//! Everything that came from the network (session ids, node URIs, member addresses, error
//! texts) goes through [`escape`], and long values are cut to [`MAX_CELL_CHARS`], so the page
//! stays small whatever the map holds. It must never be handed capabilities: the rows here have
//! no place for them. Gathering the data is `super`'s job; this file does no I/O.

use std::fmt::Write;

/// Longest text shown in one table cell; longer values end in `…`.
pub const MAX_CELL_CHARS: usize = 200;

/// Everything the page shows.
pub struct Page {
    pub cluster_name: String,
    /// The member that rendered the page (its map is the one shown).
    pub rendered_by: u64,
    pub generated_at: String,
    /// The leader as the rendering member knows it.
    pub leader: Option<u64>,
    pub members: Vec<MemberRow>,
    pub sessions: SessionsView,
    pub removals: Vec<RemovalRow>,
    /// Remembered removals not shown (older than the ones in `removals`).
    pub removals_left_out: usize,
    pub mirrors: Vec<MirrorRow>,
}

pub struct MemberRow {
    pub id: u64,
    pub addr: String,
    pub state: MemberState,
}

pub enum MemberState {
    Up(MemberView),
    /// Did not answer within the timeout, or answered with an error. `matched`: the last log
    /// index the leader knows it holds.
    Down {
        why: String,
        matched: Option<u64>,
    },
}

pub struct MemberView {
    /// openraft's server state: Leader, Follower, Candidate, Learner, Shutdown.
    pub role: String,
    pub term: u64,
    pub applied: u64,
    /// Entries behind the leader's log; `None` when no reference is known.
    pub lag: Option<u64>,
    pub ready: bool,
    pub not_ready: Option<String>,
    pub event_bus: EventBusView,
}

pub enum EventBusView {
    NotConfigured,
    /// `last_message_age_s`: seconds since the member last received a message, if it has.
    Configured {
        connected: bool,
        reconnects: u64,
        last_message_age_s: Option<u64>,
    },
    Unknown,
}

/// Live sessions grouped by Grid node.
pub struct SessionsView {
    pub total: usize,
    pub nodes: Vec<NodeRow>,
    /// Nodes with sessions that are not shown.
    pub nodes_left_out: usize,
}

pub struct NodeRow {
    pub uri: String,
    pub count: usize,
    /// (session id, start time), newest first; at most a few.
    pub sessions: Vec<(String, String)>,
}

/// One removal of the history. Kept plain so that a richer history (with a `source`) only adds
/// a field and a column.
pub struct RemovalRow {
    pub session_id: String,
    pub node: String,
    pub reason: String,
    /// `event`, `delete`, `reconciler` or `unknown` (see `map::RemovalSource`).
    pub source: &'static str,
    pub removed_at: String,
}

pub struct MirrorRow {
    pub name: String,
    pub url: String,
    pub mode: String,
    pub state: String,
    pub state_for_seconds: u64,
    pub mirrored_index: u64,
    pub lag_entries: u64,
    pub lag_seconds: Option<f64>,
    pub error: Option<String>,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.4em 0}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f0f0f0}.up{color:#080}.down{color:#b00;font-weight:bold}\
.lead{font-weight:bold}.note{color:#666}code{font-size:.9em;overflow-wrap:anywhere}";

/// Renders the whole document.
pub fn page(p: &Page) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let leader = match p.leader {
        Some(id) => format!("member {id}"),
        None => "none".to_owned(),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <title>gridraft status: {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>gridraft cluster <code>{name}</code></h1>\n\
         <p id=\"leader\">Leader: <span class=\"lead\">{leader}</span>. Rendered by member {by} \
         at {at}; refreshes every 5 seconds.</p>\n",
        name = escape(&p.cluster_name),
        by = p.rendered_by,
        at = escape(&p.generated_at),
    );
    members(&mut out, &p.members, p.leader);
    sessions(&mut out, &p.sessions);
    removals(&mut out, &p.removals, p.removals_left_out);
    mirrors(&mut out, &p.mirrors);
    out.push_str("</body></html>\n");
    out
}

fn members(out: &mut String, rows: &[MemberRow], leader: Option<u64>) {
    out.push_str(
        "<h2>Members</h2>\n<table id=\"members\"><tr><th>Member</th><th>Peer address</th>\
         <th>Status</th><th>Role</th><th>Term</th><th>Applied index</th><th>Lag (entries)</th>\
         <th>Ready</th><th>Event bus</th></tr>\n",
    );
    for m in rows {
        let lead = if Some(m.id) == leader {
            " (leader)"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr id=\"member-{id}\"><td>{id}{lead}</td><td><code>{addr}</code></td>",
            id = m.id,
            addr = cell(&m.addr),
        );
        match &m.state {
            MemberState::Down { why, matched } => {
                let matched = match matched {
                    Some(i) => format!("the leader replicated up to index {i} to it; "),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "<td class=\"down\">down</td><td colspan=\"6\" class=\"note\">{matched}{}</td></tr>",
                    cell(why)
                );
            }
            MemberState::Up(v) => {
                let lag = v.lag.map_or("?".to_owned(), |l| l.to_string());
                let ready = match (&v.not_ready, v.ready) {
                    (_, true) => "yes".to_owned(),
                    (Some(why), false) => format!("no: {}", cell(why)),
                    (None, false) => "no".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "<td class=\"up\">up</td><td>{role}</td><td>{term}</td><td>{applied}</td>\
                     <td>{lag}</td><td>{ready}</td><td>{bus}</td></tr>",
                    role = escape(&v.role),
                    term = v.term,
                    applied = v.applied,
                    bus = event_bus(&v.event_bus),
                );
            }
        }
    }
    out.push_str("</table>\n");
}

fn event_bus(bus: &EventBusView) -> String {
    match bus {
        EventBusView::NotConfigured => "not configured".to_owned(),
        EventBusView::Unknown => "?".to_owned(),
        EventBusView::Configured {
            connected,
            reconnects,
            last_message_age_s,
        } => {
            let state = if *connected {
                "connected"
            } else {
                "disconnected"
            };
            let last = match last_message_age_s {
                Some(s) => format!("last message {s} s ago"),
                None => "no message yet".to_owned(),
            };
            format!("{state}; {last}; {reconnects} reconnects")
        }
    }
}

fn sessions(out: &mut String, view: &SessionsView) {
    let _ = write!(
        out,
        "<h2>Live sessions</h2>\n<p id=\"session-total\">{} live sessions on {} Grid nodes.</p>\n",
        view.total,
        view.nodes.len() + view.nodes_left_out,
    );
    if view.nodes.is_empty() {
        return;
    }
    out.push_str(
        "<table id=\"sessions\"><tr><th>Grid node</th><th>Sessions</th>\
         <th>Newest sessions (id, start)</th></tr>\n",
    );
    for node in &view.nodes {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>",
            cell(&node.uri),
            node.count
        );
        for (id, start) in &node.sessions {
            let _ = write!(out, "<code>{}</code> {}<br>", cell(id), cell(start));
        }
        let hidden = node.count.saturating_sub(node.sessions.len());
        if hidden > 0 {
            let _ = write!(out, "<span class=\"note\">and {hidden} more</span>");
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    left_out(out, view.nodes_left_out, "more nodes");
}

/// The removal history table from plain rows, newest first.
pub fn removals(out: &mut String, rows: &[RemovalRow], left: usize) {
    out.push_str("<h2>Removal history</h2>\n");
    if rows.is_empty() {
        out.push_str("<p class=\"note\">No removals remembered.</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"removals\"><tr><th>Removed at</th><th>Session</th><th>Grid node</th>\
         <th>Reason</th><th>Source</th></tr>\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>\
             <td>{}</td></tr>",
            cell(&r.removed_at),
            cell(&r.session_id),
            cell(&r.node),
            cell(&r.reason),
            cell(r.source),
        );
    }
    out.push_str("</table>\n");
    left_out(out, left, "older removals");
}

fn mirrors(out: &mut String, rows: &[MirrorRow]) {
    out.push_str("<h2>Mirrors</h2>\n");
    if rows.is_empty() {
        out.push_str("<p class=\"note\">No mirror configured.</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"mirrors\"><tr><th>Mirror</th><th>URL</th><th>Mode</th><th>State</th>\
         <th>Mirrored index</th><th>Lag (entries)</th><th>Lag (seconds)</th><th>Error</th></tr>\n",
    );
    for m in rows {
        let lag_s = m.lag_seconds.map_or("-".to_owned(), |s| format!("{s:.1}"));
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{} for {} s</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            cell(&m.name),
            cell(&m.url),
            cell(&m.mode),
            cell(&m.state),
            m.state_for_seconds,
            m.mirrored_index,
            m.lag_entries,
            lag_s,
            cell(m.error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table>\n");
}

fn left_out(out: &mut String, n: usize, what: &str) {
    if n > 0 {
        let _ = writeln!(out, "<p class=\"note\">{n} {what} not shown.</p>");
    }
}

/// `s` cut to [`MAX_CELL_CHARS`] characters and escaped.
fn cell(s: &str) -> String {
    match s.char_indices().nth(MAX_CELL_CHARS) {
        None => escape(s),
        Some((cut, _)) => format!("{}…", escape(&s[..cut])),
    }
}

/// Text safe inside an element or a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(id: &str, node: &str) -> RemovalRow {
        RemovalRow {
            session_id: id.into(),
            node: node.into(),
            reason: "QUIT_COMMAND".into(),
            source: "event",
            removed_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn markup_from_the_network_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert('x')</script>&"#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
        let mut out = String::new();
        removals(&mut out, &[removal("<b>id</b>", "http://n/<script>")], 0);
        assert!(!out.contains("<script>") && !out.contains("<b>id"), "{out}");
        assert!(out.contains("http://n/&lt;script&gt;"), "{out}");
    }

    #[test]
    fn long_values_are_cut_and_left_out_rows_are_counted() {
        let long = "x".repeat(MAX_CELL_CHARS * 10);
        let mut out = String::new();
        removals(&mut out, &[removal(&long, "http://n")], 7);
        assert!(out.contains(&format!("{}…", "x".repeat(MAX_CELL_CHARS))));
        assert!(!out.contains(&"x".repeat(MAX_CELL_CHARS + 1)));
        assert!(out.contains("7 older removals not shown"), "{out}");
    }

    #[test]
    fn a_down_member_and_the_leader_are_named() {
        let page = page(&Page {
            cluster_name: "c".into(),
            rendered_by: 1,
            generated_at: "now".into(),
            leader: Some(2),
            members: vec![
                MemberRow {
                    id: 2,
                    addr: "127.0.0.1:2".into(),
                    state: MemberState::Up(MemberView {
                        role: "Leader".into(),
                        term: 3,
                        applied: 10,
                        lag: Some(0),
                        ready: true,
                        not_ready: None,
                        event_bus: EventBusView::NotConfigured,
                    }),
                },
                MemberRow {
                    id: 3,
                    addr: "127.0.0.1:3".into(),
                    state: MemberState::Down {
                        why: "connection refused".into(),
                        matched: Some(9),
                    },
                },
            ],
            sessions: SessionsView {
                total: 0,
                nodes: Vec::new(),
                nodes_left_out: 0,
            },
            removals: Vec::new(),
            removals_left_out: 0,
            mirrors: Vec::new(),
        });
        assert!(page.contains("Leader: <span class=\"lead\">member 2</span>"));
        assert!(page.contains("<td>2 (leader)</td>"));
        assert!(page.contains("<tr id=\"member-3\"><td>3</td><td><code>127.0.0.1:3</code></td><td class=\"down\">down</td>"));
        assert!(page.contains("replicated up to index 9 to it; connection refused"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(!page.contains("<script"));
    }
}

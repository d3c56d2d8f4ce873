//! The environment of docker-selenium's `selenium/sessions` image and Helm chart, read as
//! gridraft settings, so that gridraft's image replaces that image by its name alone.
//!
//! Which variables mean what follows that image's start script: the event bus is
//! `SE_EVENT_BUS_HOST` with `SE_EVENT_BUS_PUBLISH_PORT` and `SE_EVENT_BUS_SUBSCRIBE_PORT`
//! (Selenium's 4442 and 4443 when unset), the registration secret `SE_REGISTRATION_SECRET`,
//! the port the map serves on `SE_SESSIONS_PORT` (set by the Helm chart), else
//! `SE_SESSIONS_MAP_PORT` (the port the router and distributor reach), else the listen
//! setting's own; with `SE_BIND_HOST=true`, the map binds to `SE_SESSIONS_HOST` (an IP address
//! here). `SE_SESSIONS_MAP_HOST` is the name the router and distributor reach the map by; it
//! needs nothing from the map. Empty variables count as unset.
//!
//! These sit between the TOML file and the `GRIDRAFT_*` variables: they override the file, and
//! a setting given by a `GRIDRAFT_*` variable or a flag ([`Given`]) is left to it. This file
//! only maps names; `Settings::validate` checks the result.

use std::collections::BTreeMap;

use super::{ConfigError, Settings};

/// The variables read, in the order their problems are reported.
pub const NAMES: [&str; 8] = [
    "SE_EVENT_BUS_HOST",
    "SE_EVENT_BUS_PUBLISH_PORT",
    "SE_EVENT_BUS_SUBSCRIBE_PORT",
    "SE_REGISTRATION_SECRET",
    "SE_SESSIONS_PORT",
    "SE_SESSIONS_MAP_PORT",
    "SE_BIND_HOST",
    "SE_SESSIONS_HOST",
];

/// Selenium's event bus ports when the variables leave them out.
const PUBLISH_PORT: u16 = 4442;
const SUBSCRIBE_PORT: u16 = 4443;

/// Which settings a `GRIDRAFT_*` variable or a flag gives (those win over `SE_*`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Given {
    pub publish_events: bool,
    pub subscribe_events: bool,
    pub registration_secret: bool,
    pub listen: bool,
}

/// The `SE_*` variables that are set and not empty.
#[derive(Debug, Default, Clone)]
pub struct SeleniumEnv {
    vars: BTreeMap<&'static str, String>,
}

impl SeleniumEnv {
    /// The process environment's.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Each name of [`NAMES`] looked up with `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let vars = NAMES
            .iter()
            .filter_map(|name| Some((*name, lookup(name)?)))
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        SeleniumEnv { vars }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.trim())
    }

    fn port(&self, name: &str, problems: &mut Vec<String>) -> Option<u16> {
        let v = self.get(name)?;
        match v.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                problems.push(format!("{name}: {v:?} is not a port number"));
                None
            }
        }
    }

    /// Sets in `s` what these variables say, except what `given` leaves to `GRIDRAFT_*`.
    pub fn apply(&self, s: &mut Settings, given: Given) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let publish = self.port("SE_EVENT_BUS_PUBLISH_PORT", &mut problems);
        let subscribe = self.port("SE_EVENT_BUS_SUBSCRIBE_PORT", &mut problems);
        if let Some(host) = self.get("SE_EVENT_BUS_HOST") {
            let endpoint = |port: u16| Some(format!("tcp://{host}:{port}"));
            if !given.publish_events {
                s.events.publish_events = endpoint(publish.unwrap_or(PUBLISH_PORT));
            }
            if !given.subscribe_events {
                s.events.subscribe_events = endpoint(subscribe.unwrap_or(SUBSCRIBE_PORT));
            }
        }
        if let Some(secret) = self.get("SE_REGISTRATION_SECRET") {
            if !given.registration_secret {
                s.events.registration_secret = Some(secret.to_owned());
                s.events.registration_secret_file = None;
            }
        }
        let port = match self.port("SE_SESSIONS_PORT", &mut problems) {
            Some(p) => Some(p),
            None => self.port("SE_SESSIONS_MAP_PORT", &mut problems),
        };
        let bind = self
            .get("SE_BIND_HOST")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            .then(|| self.get("SE_SESSIONS_HOST"))
            .flatten();
        if let Some(host) = bind {
            if host.parse::<std::net::IpAddr>().is_err() {
                problems.push(format!(
                    "SE_SESSIONS_HOST: {host:?} is not an IP address (gridraft binds to an \
                     address; with SE_BIND_HOST=true it must be one)"
                ));
            }
        }
        if !given.listen && (port.is_some() || bind.is_some()) {
            s.listen = relisten(&s.listen, bind, port);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// `listen` (`ip:port`) with its host and/or port replaced.
fn relisten(listen: &str, host: Option<&str>, port: Option<u16>) -> String {
    let (old_host, old_port) = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => ("0.0.0.0".to_owned(), 5556),
    };
    let host = host.map_or(old_host, str::to_owned);
    let port = port.unwrap_or(old_port);
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests;

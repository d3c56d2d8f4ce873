//! `[ui]`: the status page on the public port (see `crate::api::ui`). Nothing to validate.

use serde::{Deserialize, Serialize};

/// `[ui]`: whether `GET /ui` serves the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct UiSettings {
    /// Serve the status page; false makes `/ui` an unknown path like any other.
    pub enabled: bool,
}

impl Default for UiSettings {
    fn default() -> Self {
        UiSettings { enabled: true }
    }
}

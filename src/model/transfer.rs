//! A volume transfer (Cinder's `os-volume-transfer`): an offer by the volume's
//! project, accepted by whoever holds its id and auth key.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: String,
    pub volume_id: String,
    /// The giving project (the only one that sees the offer).
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    /// Kept as given, in the private store (as CHAP secrets are); compared in
    /// constant time.
    pub auth_key: String,
    /// 3.55: the volume moves without its snapshots (else they move with it).
    pub no_snapshots: bool,
    pub created_at: String,
}

impl Transfer {
    pub fn key_matches(&self, offered: &str) -> bool {
        let (a, b) = (self.auth_key.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

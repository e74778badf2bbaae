//! The first start of a flashed card: join the mesh named in the config's `[join]`.

use std::path::Path;
use std::time::Duration;

use spillway_link::membership::{JoinError, Membership, join};

/// Joins from the config's `[join]` when the node starts without an identity (a flashed card's
/// first boot). An unreachable coordinator is retried with backoff (a board's network often comes
/// up after its services); a refused or malformed token is not, and the node runs standalone.
pub async fn join_at_start(
    state_dir: &Path,
    node: &str,
    settings: &spillway_agent_config::JoinSettings,
) -> Option<Membership> {
    let token = match std::fs::read_to_string(&settings.token_file) {
        Ok(t) => t.trim().to_owned(),
        Err(e) => {
            tracing::error!(
                "cannot read the join token {} ({e}); running standalone. Put the token from `spillway token create` there and restart",
                settings.token_file.display()
            );
            return None;
        }
    };
    let mut wait = Duration::from_secs(1);
    loop {
        match join(state_dir, node, &settings.coordinator, &token).await {
            Ok(m) => {
                // Spent, but still a secret: remove it where the service may (ProtectSystem
                // can make /etc read-only; then it stays, useless).
                let removed = std::fs::remove_file(&settings.token_file).is_ok();
                tracing::info!(
                    "joined the mesh of {}{}",
                    settings.coordinator,
                    if removed {
                        "; the spent join token was deleted"
                    } else {
                        ""
                    }
                );
                return Some(m);
            }
            Err(e @ (JoinError::Connect { .. } | JoinError::Resolve(..))) => {
                tracing::warn!("cannot join yet: {e}; trying again in {}s", wait.as_secs());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(
                    "cannot join the mesh of {}: {e}; running standalone",
                    settings.coordinator
                );
                return None;
            }
        }
    }
}

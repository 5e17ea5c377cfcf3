//! One JSON call to another member's peer port (through the fault layer, like every peer
//! message), for the 2pc messages.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::network::PeerClient;
use crate::types::NodeId;

/// POSTs `body` to `path` on `peer` and reads its JSON answer; any failure (not sent, no
/// answer, a non-2xx answer, a body that does not parse) as one line saying what happened.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    peers: &PeerClient,
    peer: NodeId,
    path: &str,
    body: &Req,
    timeout: Duration,
) -> Result<Resp, String> {
    let response = peers
        .post(peer, None, path, body, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("member {peer} answered {status}: {text}"));
    }
    response
        .json()
        .await
        .map_err(|e| format!("member {peer} sent an answer that does not parse: {e}"))
}

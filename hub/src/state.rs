//! The hub's shared state, handed to every service.

use crate::connections::ConnectionTable;

/// Everything the hub's services share.
#[derive(Debug, Default)]
pub struct Hub {
    pub connections: ConnectionTable,
}

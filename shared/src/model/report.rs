//! What an agent reports: apply results, health and drift (filled in by the agent work).

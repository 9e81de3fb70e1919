//! dumper: finds workloads, checkpoints and restores them with CRIU, and keeps their
//! images in a versioned, checksummed persistent area.

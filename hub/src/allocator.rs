//! The allocator the hub runs on. A plan allocates and frees millions of small values (Helm
//! renders, YAML and JSON trees) on several threads for as long as the hub runs; mimalloc keeps
//! that fast where the system allocator slows down as its heap fragments (`bench_helm`: the
//! planner about 1.5x faster with it). Programs that run the hub's planner declare it:
//! `#[global_allocator] static ALLOCATOR: Allocator = Allocator {};`.
//!
//! mimalloc gives freed memory back to the system 10 ms after it is freed; the hub's chart
//! sets `MIMALLOC_PURGE_DELAY=0` so that it does so at once and the hub's resident memory
//! follows what the fleet needs (`bench_fleet` runs the hub so).

/// The allocator to declare as the global one.
pub type Allocator = mimalloc::MiMalloc;

//! The allocator the hub runs on. A plan allocates and frees millions of small values (Helm
//! renders, YAML and JSON trees) on several threads for as long as the hub runs; mimalloc keeps
//! that fast where the system allocator slows down as its heap fragments (`bench_helm`: the
//! planner about 1.5x faster with it). Programs that run the hub's planner declare it:
//! `#[global_allocator] static ALLOCATOR: Allocator = Allocator {};`.
//!
//! mimalloc gives freed memory back to the system 10 ms after it is freed; the hub's chart
//! sets `MIMALLOC_PURGE_DELAY=0` so that it does so at once and the hub's resident memory
//! follows what the fleet needs. It also asks for transparent huge pages on its arenas; the
//! chart sets `MIMALLOC_ALLOW_THP=0`: memory given back at once and taken again is then faulted
//! in 4 KiB at a time instead of a 2 MiB page zeroed each time, which took 15% of the hub's time
//! while a change went out to 10,000 agents, and 7 KiB of resident memory per connected agent
//! (`bench_fleet` runs the hub so).

/// The allocator to declare as the global one.
pub type Allocator = mimalloc::MiMalloc;

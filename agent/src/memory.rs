//! The allocator's settings for a small, long-running process on every
//! host. One malloc arena for all threads: glibc gives each thread that
//! allocates its own arena, each with pages of its own that stay resident;
//! the agent's three threads (runtime, sampler, statfs helper) allocate
//! little and rarely at once, so sharing one arena costs no contention.
//! Blocks of 64 KiB and more (a batch being encoded or compressed) are
//! mapped on their own and returned when freed, and free memory at the top
//! of the heap above 128 KiB goes back too, instead of glibc's default of
//! letting its thresholds grow with the largest block seen. Together they
//! keep the agent inside its memory budget (see BENCHMARKS.md).
//!
//! `mallopt(3)` has no safe wrapper (rustix has none, the standard library
//! none), hence the one call below.

/// Limits glibc's malloc to one arena and fixes its mmap and trim
/// thresholds. Call before any thread starts.
/// Without glibc (musl) there is nothing to do.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator parameters; it is called at
    // start, before other threads exist, and its result (0 on failure)
    // needs no handling: the default still works.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

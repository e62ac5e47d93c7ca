//! Allocator tuning.
//!
//! glibc's malloc raises its mmap threshold each time it frees a block it had
//! mapped, up to 32 MiB. Argon2 hashes a password in one 19 MiB block: the
//! first login maps and unmaps it, lifting the threshold, and from then on
//! the block comes from the heap and stays resident after it is freed. An
//! idle server held 44 MB after one login against 23 MB before it. Fixing
//! the threshold at 1 MiB keeps blocks that large mapped, so they go back to
//! the system when freed; smaller blocks (request and response buffers) stay
//! on the heap as before.

/// Blocks at least this large are mapped and unmapped on their own.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Applies the tuning; call once, early. A no-op off glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: mallopt only sets a parameter of the allocator, under the
    // allocator's own lock; it touches no memory of ours. It returns 0 when
    // the parameter is refused, which leaves glibc's default in place.
    let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if applied == 0 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) was refused");
    }
}

/// Applies the tuning; call once, early. A no-op off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

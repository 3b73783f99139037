//! Giving memory back to the system. glibc keeps freed heap for reuse, so
//! a process that builds tens of megabytes at once (the broker decoding a
//! config for thousands of providers, the controller writing one) stays at
//! that peak in resident size, which is what a memory limit counts.

/// Returns free heap pages to the kernel (glibc; elsewhere nothing).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

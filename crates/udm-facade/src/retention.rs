//! Retention enforcement, pins and orphan GC (work in progress).

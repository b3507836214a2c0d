//! Dropping the resident pages of a read-only memory map once a tensor has been consumed, so that
//! streaming a model larger than memory keeps resident memory bounded by what is in flight.

use memmap2::Mmap;

/// Drops the whole pages of `map[start..end]` from memory (they are read again if touched).
pub(crate) fn drop_pages(map: &Mmap, start: usize, end: usize) {
    let page = 4096;
    let (start, end) = (start.div_ceil(page) * page, end / page * page);
    if end > start {
        // SAFETY: the map is a private read-only file mapping; dropping its pages only means they
        // are read from the file again if touched.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}

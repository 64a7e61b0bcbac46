//! The misbehaviours the misbehaving-router and misbehaving-policy test
//! fixtures share: spin, hog memory, recurse without end.

/// Spins without end.
pub fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Reserves memory without end, 16 MiB at a time (untouched, so growth is fast).
pub fn hog() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::with_capacity(16 << 20);
        block.push(1u8);
        hoard.push(std::hint::black_box(block));
    }
}

/// Recursion the optimiser cannot turn into a loop; overflows the stack.
pub fn recurse(n: u32) -> u32 {
    let frame = std::hint::black_box([n; 64]);
    if frame[0] == u32::MAX {
        return 0; // never: the stack runs out long before
    }
    recurse(frame[7].wrapping_add(1)).wrapping_add(frame[3])
}

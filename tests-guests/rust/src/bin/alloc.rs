//! Allocates and touches 1 MiB blocks forever (a memory bomb in Rust: when
//! growth is refused the allocator aborts).
fn main() {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[0] = 1;
        blocks.push(block);
    }
}

use orcastra::task::orca_task;

#[orca_task]
fn resize(width: u32) -> u32 {
    width
}

fn main() {}

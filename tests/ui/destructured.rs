use orcastra::task::orca_task;

#[orca_task]
async fn area((width, height): (u32, u32)) -> u32 {
    width * height
}

fn main() {}

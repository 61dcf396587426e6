use orcastra::task::orca_task;

#[orca_task]
async fn echo<T: Send>(value: T) -> T {
    value
}

fn main() {}

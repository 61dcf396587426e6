use orcastra::task::orca_task;

#[orca_task]
async fn greet(name: &str) -> String {
    format!("hello {name}")
}

fn main() {}

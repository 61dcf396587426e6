use orcastra::task::orca_task;

#[orca_task(retries = 3, timout = "30s")]
async fn misspelt() {}

#[orca_task(timeout = "thirty seconds")]
async fn bad_duration() {}

#[orca_task(priority = 4)]
async fn too_urgent() {}

#[orca_task(queue = crawl)]
async fn unquoted() {}

#[orca_task(max_deliveries = 0)]
async fn never_delivered() {}

fn main() {}

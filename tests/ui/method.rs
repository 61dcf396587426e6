use orcastra::task::orca_task;

struct Crawler;

impl Crawler {
    #[orca_task]
    async fn fetch(&self, url: String) -> String {
        url
    }
}

fn main() {}

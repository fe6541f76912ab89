"""DVC stage demo_data: generate the demo videos and labels CSV (movinet.data.demo)."""

from movinet.config import load_params, resolve_path
from movinet.data.demo import DemoConfig, make_demo_data

if __name__ == "__main__":
    data = load_params()["data"]
    out = resolve_path(data["videos"]).parent
    make_demo_data(out, DemoConfig(**data["generate"]))
    print(f"demo data in {out}")

"""Save the browser's screen as SVG, headless: a query, then one piano key (the list re-ranks at that pitch).

    python scripts/browse_screenshot.py --db LIBRARY --query "warm pad" --key c --out docs/browse.svg
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--query", default="warm pad")
    parser.add_argument("--key", default="c", help="a computer-keyboard piano key to press (c: E3)")
    parser.add_argument("--out", default="docs/browse.svg")
    parser.add_argument("--size", default="150x36")
    args = parser.parse_args()

    from timbreclip.defaults import default_model_path, load_torch_model
    from timbreclip.library.db import Library
    from timbreclip.library.search import PatchSearch
    from timbreclip.realtime.browse_ui import BrowserApp
    from timbreclip.realtime.browser import BrowserSession

    model = load_torch_model(default_model_path())
    library = Library(args.db, create=False)
    session = BrowserSession(library, PatchSearch(library, model, model.fingerprint()))
    app = BrowserApp(session, query=args.query, midi_name="(none)", audio_name="(screenshot: off)")
    width, height = (int(v) for v in args.size.split("x"))

    async def run():
        async with app.run_test(size=(width, height)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press(args.key)
            await pilot.pause()
            out = Path(args.out)
            app.save_screenshot(out.name, str(out.parent))

    asyncio.run(run())
    library.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""The Weights tab's bundle row in a real headless chromium: export and download a bundle, a bad
file refused beside the row (no error badge), a good one imported with Replace."""

from __future__ import annotations

import json
import zipfile

from tests.browser import App, no_error_badge


def test_weights_tab_exports_downloads_refuses_and_imports_a_bundle(page, embedder, llama, tmp_path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    app = App(embedder, llama)
    app.engram.playbooks.add_bullet("default", "Quote the sentence that holds the date.")
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Weights").click()
        page.locator("#engram-bundle-export").click()
        note = page.locator("#engram-bundle-note")
        expect(note).to_contain_text("Bundle ready")
        with page.expect_download() as download:
            page.locator("#engram-bundle-download").click()
        saved = tmp_path / "saved.zip"
        download.value.save_as(saved)
        assert json.loads(zipfile.ZipFile(saved).read("manifest.json"))["playbooks"][0]["name"] == "default"

        upload = page.locator("#engram-bundle-import").locator("xpath=..").locator("input[type=file]")
        bad = tmp_path / "bad.zip"
        bad.write_bytes(b"PK\x03\x04 not really a zip")
        upload.set_input_files(str(bad))
        expect(note).to_contain_text("nothing was changed: file: not a complete zip archive")
        no_error_badge(page)

        app.engram.playbooks.add_bullet("default", "Give every price with its unit.")
        page.locator("#engram-bundle-replace input").check()
        upload.set_input_files(str(saved))
        expect(note).to_contain_text("Replaced default")
        assert [b.content for b in app.engram.playbooks.show("default").bullets] == \
            ["Quote the sentence that holds the date."]
        no_error_badge(page)
    finally:
        app.close()


def test_the_app_refuses_an_upload_over_the_bundle_and_document_limits(tmp_path, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from app.services.bundles import BundleService
    from tests.test_bundles import engram_at
    from ui.app import create_app, max_upload_bytes

    engram = engram_at(tmp_path, max_file_mb="0.001")  # 1,048 bytes
    monkeypatch.setattr(BundleService, "max_bundle_bytes", staticmethod(lambda: 4096))
    try:
        assert max_upload_bytes(engram) == 4096
        with TestClient(create_app(engram)) as client:
            big = client.post("/gradio_api/upload", files={"files": ("big.zip", b"x" * 5000, "application/zip")})
            assert big.status_code == 413, big.text
            small = client.post("/gradio_api/upload", files={"files": ("small.zip", b"x" * 3000, "application/zip")})
            assert small.status_code == 200, small.text
    finally:
        engram.close()

from ploutos_tui.app import PloutosApp


async def test_panel_opens_and_quits_with_q():
    app = PloutosApp()
    async with app.run_test(size=(80, 24)) as pilot:
        status = app.query_one("#status")
        assert "Usable CPUs" in str(status.render())
        await pilot.press("q")
    assert app.return_code == 0

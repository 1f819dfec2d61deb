"""The look: a theme whose fonts ship inside gradio (nothing is fetched from the internet) and
the few styles gradio's components do not cover (progress card, citations, empty states).

Only the regular and bold faces gradio ships are complete; its semibold and medium faces hold a
few letters, so a semibold label drew its "b" in one face and the rest in another. Declaring only
400 and 700 makes every heavier weight use the complete bold face."""

import gradio as gr

COMPLETE_WEIGHTS = (400, 700)

THEME = gr.themes.Soft(
    primary_hue="indigo",
    secondary_hue="sky",
    neutral_hue="slate",
    radius_size="md",
    font=[gr.themes.LocalFont("IBM Plex Sans", weights=COMPLETE_WEIGHTS), "ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=[gr.themes.LocalFont("IBM Plex Mono", weights=COMPLETE_WEIGHTS), "ui-monospace", "monospace"],
)

CSS = """
.gradio-container { max-width: 1240px !important; width: 100% !important; margin: 0 auto !important; }
#engram-chat button[aria-label="Clear"] { display: none; }
.engram-input { border: 1px solid var(--border-color-primary) !important; border-radius: 8px !important;
  background: var(--input-background-fill) !important; }
.engram-label { align-self: center; white-space: nowrap; color: var(--body-text-color-subdued); }
#engram-documents, #engram-models, #engram-settings, #engram-weights-learned, #engram-weights-sleeps,
#engram-checkpoints { --font-mono: var(--font); }
footer { display: none !important; }
#engram-header { display: flex; align-items: baseline; gap: 12px; padding: 4px 2px 10px; }
#engram-header h1 { font-size: 1.5rem; font-weight: 600; margin: 0; letter-spacing: -0.01em; }
#engram-header .tagline { color: var(--body-text-color-subdued); font-size: 0.95rem; }
.engram-card { border: 1px solid var(--border-color-primary); border-radius: 10px;
  padding: 14px 16px; background: var(--block-background-fill); }
.engram-muted { color: var(--body-text-color-subdued); font-size: 0.9rem; }
.engram-empty { text-align: center; padding: 28px 16px; color: var(--body-text-color-subdued); }
.engram-empty strong { color: var(--body-text-color); }
.engram-empty code, .engram-card code { font-size: 0.85rem; word-break: break-all; }
.engram-progress-head { display: flex; justify-content: space-between; gap: 12px; margin-bottom: 8px; }
.engram-progress-head .state { font-weight: 600; }
.engram-bar { height: 10px; border-radius: 6px; background: var(--neutral-200); overflow: hidden; }
.engram-bar > div { height: 100%; background: var(--primary-500); transition: width .4s ease; }
.engram-bar.paused > div { background: var(--neutral-400); }
.engram-current { margin-top: 6px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.engram-folders { list-style: none; padding: 0; margin: 0; }
.engram-folders li { display: flex; justify-content: space-between; gap: 12px; padding: 6px 0;
  border-bottom: 1px solid var(--border-color-primary); }
.engram-folders li:last-child { border-bottom: none; }
.engram-folders .path { font-family: var(--font-mono); font-size: 0.85rem; word-break: break-all; }
.engram-badge { display: inline-block; font-size: 0.75rem; padding: 1px 8px; border-radius: 999px;
  background: var(--primary-100); color: var(--primary-700); margin-left: 6px; }
.engram-sources { margin-top: 10px; padding-top: 8px; border-top: 1px solid var(--border-color-primary);
  font-size: 0.88rem; }
.engram-sources ol { margin: 4px 0 0 0; padding-left: 1.4em; }
.engram-sources li { margin: 4px 0; }
.engram-sources details.consulted { margin-top: 6px; color: var(--body-text-color-subdued); }
.engram-sources details.consulted summary { cursor: pointer; }
.engram-sources .where { color: var(--body-text-color-subdued); }
.engram-sources q { display: block; color: var(--body-text-color-subdued); font-style: italic; }
.engram-meta { display: block; margin-top: 8px; font-size: 0.78rem; color: var(--body-text-color-subdued); }
.engram-decision { display: block; margin-top: 2px; font-size: 0.78rem; color: var(--body-text-color-subdued); }
.engram-warning { color: var(--error-text-color, #b42318); }
.engram-unsupported { text-decoration: underline wavy var(--error-text-color, #b42318);
  text-decoration-skip-ink: none; text-underline-offset: 3px; cursor: help; }
#engram-conversations { max-height: 560px; overflow-y: auto; }
#engram-conversations label { width: 100%; }
.engram-selected { font-size: 0.9rem; padding: 6px 2px; }
"""

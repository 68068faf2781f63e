"""The study report: build (build_report), document (blocks and renderers), tables, figures."""

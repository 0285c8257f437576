"""The book's experiments: one module per chapter, named like its notebook.

Each module holds the chapter's frozen ``Params`` (a :class:`sgdnoise.params.ChapterParams`:
the one declaration of its parameters and their checks), the studies the notebook calls,
and the functions that turn the numbers into verdict sentences
(:class:`sgdnoise.report.Verdict`). Modules here import the library; the library never
imports them.
"""

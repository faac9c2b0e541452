"""What a loop is, for any host: block entries and their discovery (`registry`), declarations as parameter specs
(`params`), a pipeline state seeded and copied (`state`), one loop run (`runner`), errors that say where
(`errors`), and the one module facing diffusers' modular API (`compat`)."""

"""Small helpers every command shares (torch-free): :mod:`cnnzoo.utils.files` is the one output-path check
and the one atomic writer."""

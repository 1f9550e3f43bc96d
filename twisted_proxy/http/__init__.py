"""
Sans-io HTTP/1.1 pieces: message heads, the parser adapter over httptools
(llhttp), header policy and the proxy's own error responses.
"""

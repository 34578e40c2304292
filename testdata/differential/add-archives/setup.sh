mkdir -p src/d && echo one > src/one && echo two > src/d/two && ln -s one src/link
tar --owner=7 --group=8 --mtime=@1000000000 -cf archive.tar -C src . && gzip -n -c archive.tar > archive.tar.gz && rm -rf src

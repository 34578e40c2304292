mkdir -p src/d && echo one > src/one && echo two > src/d/two && chmod 600 src/d/two
tar --owner=3 --group=4 --mtime=@1000000000 -cf a.tar -C src . && bzip2 -k -c a.tar > a.tar.bz2 && xz -k -c a.tar > a.tar.xz
mkdir dir-with-tar && cp a.tar dir-with-tar/inner.tar
echo hello | gzip -n -c > single.gz
rm -rf src

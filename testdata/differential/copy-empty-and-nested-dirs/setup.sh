mkdir -p src/empty src/nested/a/b/c && echo n > src/nested/a/b/c/leaf && chmod 711 src/nested/a
